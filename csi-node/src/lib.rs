//! The CSI Identity and Node plugin of Fluid (driver `fuse.csi.fluid.io`), run as root on
//! every node by the DaemonSet. It supervises one `fluid-fuse` daemon per staged volume and
//! bind-mounts it into pods (`supervisor/`, `node_server.rs`); optionally it labels its Node in
//! Kubernetes (`labels.rs`) and serves the Datasets' cache figures to the controller
//! (`cache_server.rs`). The binary `fluid-csi-node` is [`run`] behind its command line.

pub mod cache_dirs;
pub mod cache_server;
pub mod config;
pub mod error;
pub mod labels;
pub mod mounts;
pub mod node_server;
pub mod peers;
pub mod policy;
pub mod registration_server;
pub mod state;
pub mod supervisor;

use fluid_proto::Endpoint;
use fluid_proto::csi::identity_server::IdentityServer;
use fluid_proto::csi::node_server::NodeServer;
use fluid_proto::fluid::cache_node_server::CacheNodeServer;
use fluid_proto::identity::IdentityService;
use fluid_proto::registration::registration_server::RegistrationServer;
use tokio::sync::watch;

use crate::config::Config;
use crate::error::{Error, Result};

/// Serves CSI (and the cache endpoint) until SIGINT/SIGTERM, after adopting the daemons of a
/// previous run.
pub async fn run(cfg: Config) -> Result<()> {
    let registration = cfg.registration().map_err(Error::Config)?;
    let health = match cfg.health_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| Error::io(format!("--health-listen {addr}"), e))?,
        ),
        None => None,
    };
    // Bind first: a second plugin on the same socket must fail before it touches any daemon.
    let bound = cfg.endpoint.bind().await?;
    let cache_bound = match &cfg.cache_endpoint {
        Some(ep) => Some(ep.bind().await?),
        None => None,
    };
    // What the Node annotation advertises; checked before anything runs.
    let advertise = match (&cache_bound, cfg.kubernetes) {
        (Some(b), true) => match b.endpoint() {
            Endpoint::Tcp(addr) => Some(cfg.cache_advertise(addr).map_err(Error::Config)?),
            Endpoint::Unix(_) => None,
        },
        _ => None,
    };
    // Reads the in-cluster service account or KUBECONFIG now, so a missing one fails at start;
    // it does not connect yet.
    let kube = if cfg.kubernetes {
        let client = kube::Client::try_default()
            .await
            .map_err(|e| Error::kube("--kubernetes: no Kubernetes client configuration", e))?;
        Some(client)
    } else {
        None
    };

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
    if let Some(client) = kube {
        // After recovery: the first pass knows every staged volume, so it removes only labels
        // that really are stale.
        if sup.shares_caches() {
            peers::spawn(sup.clone(), client.clone());
        }
        labels::spawn(
            sup.clone(),
            client,
            sup.config().nodeid.clone(),
            advertise.clone(),
        );
    }

    // One signal handler; each server stops when it fires.
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        fluid_proto::endpoint::shutdown_signal().await;
        stop_tx.send_replace(true);
    });
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };

    if let Some(listener) = health {
        tokio::spawn(fluid_proto::health::serve(
            listener,
            sup.config().endpoint.clone(),
            stopped(stop_rx.clone()),
        ));
    }
    let router = tonic::transport::Server::builder()
        .add_service(IdentityServer::new(identity))
        .add_service(NodeServer::new(node_server::NodeService::new(sup.clone())));
    tracing::info!("serving CSI on {}", bound.endpoint());
    let csi = bound.serve(router, stopped(stop_rx.clone()));
    let cache = async {
        let Some(b) = cache_bound else {
            return Ok(());
        };
        let service = cache_server::CacheService::new(sup.clone(), stop_rx.clone());
        let token = sup.config().cache_token.as_ref().map(|t| t.as_str());
        if token.is_none() {
            tracing::warn!(
                "the cache endpoint has no token ({}): anyone who reaches it may read cache figures, evict or warm up",
                fluid_proto::cache_auth::TOKEN_ENV
            );
        }
        let guard = fluid_proto::cache_auth::RequireToken::new(token);
        let router = tonic::transport::Server::builder()
            .add_service(CacheNodeServer::with_interceptor(service, guard));
        tracing::info!(
            listen = %b.endpoint(),
            advertised = advertise.as_deref().unwrap_or("-"),
            "serving the Datasets' cache service"
        );
        b.serve(router, stopped(stop_rx.clone())).await
    };
    let registration = async {
        let Some((socket, csi_socket)) = registration else {
            return Ok(());
        };
        let bound = Endpoint::Unix(socket).bind().await?;
        let service = registration_server::RegistrationService::new(
            sup.config().drivername.clone(),
            csi_socket,
        );
        let router =
            tonic::transport::Server::builder().add_service(RegistrationServer::new(service));
        tracing::info!(
            "serving the kubelet's plugin registration on {}",
            bound.endpoint()
        );
        bound.serve(router, stopped(stop_rx.clone())).await
    };
    tokio::try_join!(csi, cache, registration)?;
    // The fluid-fuse daemons keep running (and the Node keeps its labels: their cache is
    // still here): a restarted plugin adopts them.
    tracing::info!("stopped; fluid-fuse daemons left running for the next start to adopt");
    Ok(())
}
