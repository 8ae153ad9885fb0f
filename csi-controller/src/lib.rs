//! The Fluid CSI controller plugin: the CSI Identity and Controller services over a unix
//! socket, as the external-provisioner sidecar expects. Volumes are made from Fluid Datasets
//! (from the `--datasets` catalogue, resolved in the PVC's namespace only) or from an inline
//! mount point, and are recorded in a state directory so they outlive restarts.

pub mod catalogue;
pub mod config;
pub mod controller;
pub mod crd;
pub mod error;
pub mod reconcile;
pub mod store;
pub mod webhook;

use std::sync::Arc;

use fluid_proto::csi::controller_server::ControllerServer;
use fluid_proto::csi::identity_server::IdentityServer;
use fluid_proto::endpoint::shutdown_signal;
use fluid_proto::identity::IdentityService;

pub use config::{Command, Config};
pub use error::{Error, Result};

use crate::catalogue::Catalogue;
use crate::controller::ControllerService;
use crate::store::Store;

/// Loads the catalogue and the volume records, then serves CSI until SIGTERM or SIGINT.
pub async fn run(config: Config) -> Result<()> {
    let catalogue = match &config.datasets {
        Some(path) => {
            let c = Catalogue::load(path)?;
            tracing::info!(file = %path.display(), datasets = c.len(), "dataset catalogue loaded");
            c
        }
        None => {
            tracing::info!(
                "no --datasets catalogue: only inline mountPoint volumes can be created"
            );
            Catalogue::default()
        }
    };
    let health = match config.health_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| Error::io(format!("--health-listen {addr}"), e))?,
        ),
        None => None,
    };
    let store = Store::open(&config.state_dir)?;
    tracing::info!(state_dir = %config.state_dir.display(), volumes = store.len(), "volume records loaded");

    let identity = IdentityService::new(config.drivername.clone(), true);
    let mut controller = ControllerService::new(catalogue, store);
    let mut reconciler = None;
    let mut webhook_task = None;
    if config.kubernetes {
        let client = kube::Client::try_default().await?;
        webhook_task = webhook::start(&config, &client, shutdown_signal()).await?;
        controller = controller.with_kubernetes(client.clone());
        let election = election(&config);
        let ctx = Arc::new(reconcile::Context {
            events: kube::runtime::events::Recorder::new(
                client.clone(),
                reconcile::event_reporter(),
            ),
            client: client.clone(),
            local_roots: config.local_roots.clone(),
            credential_endpoints: config.credential_endpoints.clone(),
            driver: config.drivername.clone(),
            scans: reconcile::ufs::Scans::new(
                config.allow_ambient_credentials,
                config.hdfs_users.clone(),
            ),
            loads: reconcile::dataload::Loads::default(),
            stats_interval: config.stats_interval,
            cache_auth: cache_auth(config.cache_token.as_ref().map(|t| t.as_str()))?,
        });
        reconciler = Some(tokio::spawn(reconcile_while_leading(client, ctx, election)));
    }
    if let Some(listener) = health {
        tokio::spawn(fluid_proto::health::serve(
            listener,
            config.endpoint.clone(),
            shutdown_signal(),
        ));
    }
    let router = tonic::transport::Server::builder()
        .add_service(IdentityServer::new(identity))
        .add_service(ControllerServer::new(controller));
    let bound = config.endpoint.bind().await?;
    tracing::info!(endpoint = %bound.endpoint(), driver = %config.drivername, version = env!("CARGO_PKG_VERSION"), "serving CSI Identity and Controller");
    bound.serve(router, shutdown_signal()).await?;
    if let Some(r) = reconciler {
        let _ = r.await;
    }
    if let Some(w) = webhook_task {
        let _ = w.await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// The Lease the reconcilers run under, with --leader-elect.
fn election(config: &Config) -> Option<reconcile::leader::Election> {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .unwrap_or_default();
    config.leader_elect.then(|| reconcile::leader::Election {
        namespace: config.leader_election_namespace.clone(),
        name: config.leader_election_id.clone(),
        identity: format!("{}_{}", host.trim(), std::process::id()),
        duration: config.leader_election_duration,
    })
}

/// Runs the reconcilers until shutdown: at once, or once this replica leads.
async fn reconcile_while_leading(
    client: kube::Client,
    ctx: Arc<reconcile::Context>,
    election: Option<reconcile::leader::Election>,
) {
    let Some(election) = election else {
        tracing::info!("running the Dataset reconciler");
        return reconcile::run(ctx, shutdown_signal()).await;
    };
    tokio::select! {
        result = reconcile::leader::acquire(&client, &election) => {
            if let Err(e) = result {
                tracing::error!("leader election: {e}");
                return;
            }
        }
        () = shutdown_signal() => return,
    }
    tracing::info!("running the Dataset reconciler");
    tokio::select! {
        () = reconcile::run(ctx, shutdown_signal()) => {
            reconcile::leader::release(&client, &election).await;
        }
        () = reconcile::leader::keep(&client, &election) => {
            // Another replica may lead by now: reconciling on would race it. The pod restarts
            // as a candidate.
            tracing::error!("no longer leading: exiting");
            std::process::exit(1);
        }
    }
}

/// The sender of the nodes' cache-endpoint token.
fn cache_auth(token: Option<&str>) -> Result<fluid_proto::cache_auth::BearerToken> {
    fluid_proto::cache_auth::BearerToken::new(token).map_err(|m| Error::invalid("--cache-token", m))
}

/// `fluid-csi-controller evict`: Evict on every node serving the Dataset (`namespace/name`),
/// one line per node on stdout; fails if any node could not be reached or refused.
pub async fn evict(dataset: &str, paths: &[String], token: Option<&str>) -> Result<()> {
    let auth = cache_auth(token)?;
    let (ns, name) = fluid_volume::context::parse_dataset(dataset)
        .ok_or_else(|| Error::invalid("dataset", "give it as NAMESPACE/NAME"))?;
    let client = kube::Client::try_default().await?;
    let nodes = reconcile::nodes::list_serving(&client, ns, name).await?;
    if nodes.is_empty() {
        println!("no node serves Dataset {dataset}: nothing cached");
        return Ok(());
    }
    let paths = if paths.is_empty() {
        vec!["/".to_string()]
    } else {
        paths.to_vec()
    };
    let mut failed = Vec::new();
    let (mut blocks, mut bytes) = (0, 0);
    for node in nodes {
        let reply = async {
            reconcile::nodes::connect(&node, &auth)
                .await?
                .evict(fluid_proto::fluid::EvictRequest {
                    paths: paths.clone(),
                    dataset: dataset.to_string(),
                })
                .await
                .map(|r| r.into_inner())
                .map_err(|s| node.refused(s))
        }
        .await;
        match reply {
            Ok(r) => {
                println!(
                    "{}: {} blocks, {} freed",
                    node.name,
                    r.blocks_evicted,
                    fluid_volume::size::human_size(r.bytes_freed)
                );
                blocks += r.blocks_evicted;
                bytes += r.bytes_freed;
            }
            Err(e) => failed.push(e.to_string()),
        }
    }
    println!(
        "total: {blocks} blocks, {} freed",
        fluid_volume::size::human_size(bytes)
    );
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Error::dataset(dataset, failed.join("; ")))
    }
}
