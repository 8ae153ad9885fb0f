//! The Kubernetes side of the controller (`--kubernetes`): the Dataset and DataLoad
//! reconcilers and the periodic cache-state refresh.

pub mod cache_states;
pub mod dataload;
pub mod dataset;
pub mod leader;
pub mod nodes;
pub mod objects;
pub mod ufs;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::Client;
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};

use crate::crd::{CacheRuntime, DataLoad, Dataset};

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    /// The CSI driver name the PVs name.
    pub driver: String,
    pub scans: ufs::Scans,
    pub loads: dataload::Loads,
    pub stats_interval: Duration,
    /// Sends the nodes' cache-endpoint token (`--cache-token`).
    pub cache_auth: fluid_proto::cache_auth::BearerToken,
    /// Where `local://` Datasets may point (`--local-roots`).
    pub local_roots: Vec<std::path::PathBuf>,
    /// Where credentials from a Secret may be sent (`--credential-endpoints`).
    pub credential_endpoints: Vec<fluid_volume::endpoints::EndpointPattern>,
    /// Publishes the Events `kubectl describe` shows beside a Dataset's conditions.
    pub events: kube::runtime::events::Recorder,
}

/// The reporter of the controller's Events: this process (its pod, under Kubernetes).
pub fn event_reporter() -> kube::runtime::events::Reporter {
    kube::runtime::events::Reporter {
        controller: super::reconcile::dataset::MANAGER.into(),
        instance: std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .ok(),
    }
}

/// Runs the reconciler and the cache-state refresh until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let stats = tokio::spawn(cache_states::run(ctx.clone()));
    // A list then a watch: the streaming-list mode needs etcd features some clusters lack.
    let config = watcher::Config::default();
    let datasets = Controller::new(Api::<Dataset>::all(client.clone()), config.clone())
        .owns(
            Api::<PersistentVolumeClaim>::all(client.clone()),
            watcher::Config::default().labels(objects::LABEL_NAME),
        )
        // A CacheRuntime binds to the Dataset of its name and namespace.
        .watches(Api::<CacheRuntime>::all(client.clone()), config, |rt| {
            let ns = rt.metadata.namespace.clone()?;
            let name = rt.metadata.name.clone()?;
            Some(ObjectRef::<Dataset>::new(&name).within(&ns))
        })
        .graceful_shutdown_on(shutdown)
        .run(dataset::reconcile, dataset::error_policy, ctx.clone())
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!("reconcile: {e}");
            }
        });
    let loads = Controller::new(Api::<DataLoad>::all(client), watcher::Config::default())
        .run(dataload::reconcile, dataload::error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!("reconcile: {e}");
            }
        });
    // The DataLoad controller stops with the Dataset one (which watches for the signal).
    tokio::select! {
        () = datasets => {}
        () = loads => {}
    }
    stats.abort();
}
