//! `fluid-csi-node`: the CSI Identity and Node plugin of Fluid (driver `fuse.csi.fluid.io`),
//! run as root on every node by the DaemonSet. It supervises one `fluid-fuse` daemon per staged
//! volume and bind-mounts it into pods; see `supervisor.rs` and `node.rs`.

mod config;
mod error;
mod mounts;
mod node;
mod state;
mod supervisor;

use std::process::ExitCode;

use clap::Parser;
use fluid_proto::csi::identity_server::IdentityServer;
use fluid_proto::csi::node_server::NodeServer;
use fluid_proto::identity::IdentityService;

use crate::config::Config;
use crate::error::Result;

fn main() -> ExitCode {
    let cfg = Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cfg: Config) -> Result<()> {
    // Bind first: a second plugin on the same socket must fail before it touches any daemon.
    let bound = cfg.endpoint.bind().await?;
    let identity = IdentityService::new(cfg.drivername.clone(), false);
    let sup = supervisor::Supervisor::new(cfg)?;
    tracing::info!(
        node = %sup.config().nodeid,
        driver = %sup.config().drivername,
        state_dir = %sup.state().root().display(),
        fuse_binary = %sup.fuse_binary().display(),
        "fluid-csi-node {} starting",
        env!("CARGO_PKG_VERSION")
    );
    sup.recover().await?;
    let router = tonic::transport::Server::builder()
        .add_service(IdentityServer::new(identity))
        .add_service(NodeServer::new(node::NodeService::new(sup)));
    tracing::info!("serving CSI on {}", bound.endpoint());
    bound
        .serve(router, fluid_proto::endpoint::shutdown_signal())
        .await?;
    // The fluid-fuse daemons keep running: a restarted plugin adopts them.
    tracing::info!("stopped; fluid-fuse daemons left running for the next start to adopt");
    Ok(())
}
