//! Kubernetes for the integration tests: a client for the test kube-apiserver
//! (`scripts/services.sh up kube`, kubeconfig in `FLUID_KUBECONFIG`), names no other test uses,
//! objects that are deleted when the test ends (even when it fails), and waiting for a condition
//! with a deadline.
//!
//! That apiserver runs without controller-manager, scheduler or kubelet: objects are stored and
//! validated, nothing acts on them. A Node is just an object; a deleted Namespace stays
//! Terminating forever, so tests make fresh namespaces ([`Kube::create_namespace`]) rather than
//! re-creating one; ownerReferences do not cascade.
//!
//! ```no_run
//! # async fn f() -> anyhow::Result<()> {
//! use fluid_tests::kube::{Kube, unique_name};
//! let kube = Kube::connect().await?;
//! let node = kube.create_node(&unique_name("fluid-test")).await?; // deleted on drop
//! let api = kube.nodes();
//! fluid_tests::kube::wait_for_object(&api, &node.name, "the label", |n| {
//!     n.metadata.labels.as_ref().is_some_and(|l| l.contains_key("x"))
//! })
//! .await?;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Namespace, Node};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::{ClusterResourceScope, NamespaceResourceScope};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Resource, ResourceExt};
use rand::Rng;
// The tests crate has no serde of its own; k8s-openapi re-exports the one kube uses.
use k8s_openapi::serde::Serialize;
use k8s_openapi::serde::de::DeserializeOwned;

use crate::services::{on_own_runtime, require_reachable, var};

/// How the service is named in errors, with how to start it.
pub const SERVICE: &str = "the test kube-apiserver (scripts/services.sh up kube)";

/// How long [`wait_for`] and [`wait_for_object`] wait by default: generous, since a loaded
/// 2-core machine is slow; a test never asserts how long something took.
pub const WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);

/// The admin kubeconfig of the test apiserver (`FLUID_KUBECONFIG`), once the apiserver answers
/// on its port. Give it to a child process as `KUBECONFIG`.
pub fn kubeconfig_path() -> Result<PathBuf> {
    let path = PathBuf::from(var(SERVICE, "FLUID_KUBECONFIG")?);
    if !path.is_file() {
        bail!(
            "{SERVICE}: FLUID_KUBECONFIG names {}, which does not exist",
            path.display()
        );
    }
    require_reachable(SERVICE, &var(SERVICE, "FLUID_KUBE_APISERVER")?)?;
    Ok(path)
}

/// The client configuration for the test apiserver, from [`kubeconfig_path`].
pub async fn config() -> Result<kube::Config> {
    let path = kubeconfig_path()?;
    let kc = Kubeconfig::read_from(&path)
        .with_context(|| format!("{SERVICE}: reading {}", path.display()))?;
    kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("{SERVICE}: loading {}", path.display()))
}

/// A name for an object no other test (or earlier run) uses: `prefix-` and 8 random
/// characters of `[a-z0-9]`, cut to 63 characters, so it is a valid DNS label when the prefix
/// is one (namespaces, nodes, most objects).
pub fn unique_name(prefix: &str) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let suffix: String = (0..8)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect();
    let mut name = format!("{prefix}-{suffix}");
    name.truncate(63);
    name
}

/// A client for the test apiserver, and what it takes to make more (the clean-up of [`Temp`]
/// objects runs on a runtime of its own).
#[derive(Clone)]
pub struct Kube {
    pub client: kube::Client,
    config: kube::Config,
}

impl Kube {
    /// Connects to the test apiserver; fails with a message naming it when it is not set up or
    /// not running.
    pub async fn connect() -> Result<Kube> {
        let config = config().await?;
        let client = kube::Client::try_from(config.clone())
            .with_context(|| format!("{SERVICE}: making a client"))?;
        Ok(Kube { client, config })
    }

    pub fn nodes(&self) -> Api<Node> {
        Api::all(self.client.clone())
    }

    /// Creates a cluster-scoped object; it is deleted when the returned guard drops.
    pub async fn create_cluster<K>(&self, object: &K) -> Result<Temp<K>>
    where
        K: Resource<DynamicType = (), Scope = ClusterResourceScope>
            + Clone
            + Debug
            + Serialize
            + DeserializeOwned
            + Send
            + Sync
            + 'static,
    {
        let created = Api::<K>::all(self.client.clone())
            .create(&PostParams::default(), object)
            .await
            .with_context(|| format!("creating {} {}", K::kind(&()), object.name_any()))?;
        let name = created.name_any();
        Ok(Temp {
            delete: Some(deleter(
                self.config.clone(),
                name.clone(),
                |c, _| Api::<K>::all(c),
                None,
            )),
            name,
            namespace: None,
            object: created,
        })
    }

    /// Creates an object in namespace `ns`; it is deleted when the returned guard drops.
    pub async fn create_namespaced<K>(&self, ns: &str, object: &K) -> Result<Temp<K>>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + Debug
            + Serialize
            + DeserializeOwned
            + Send
            + Sync
            + 'static,
    {
        let created = Api::<K>::namespaced(self.client.clone(), ns)
            .create(&PostParams::default(), object)
            .await
            .with_context(|| format!("creating {} {ns}/{}", K::kind(&()), object.name_any()))?;
        let name = created.name_any();
        Ok(Temp {
            delete: Some(deleter(
                self.config.clone(),
                name.clone(),
                |c, ns| Api::<K>::namespaced(c, ns.unwrap_or_default()),
                Some(ns.to_string()),
            )),
            name,
            namespace: Some(ns.to_string()),
            object: created,
        })
    }

    /// A Node object named `name` with the given labels (nothing runs on it: there is no
    /// kubelet), deleted on drop.
    pub async fn create_node_with_labels(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        annotations: &[(&str, &str)],
    ) -> Result<Temp<Node>> {
        let map = |kv: &[(&str, &str)]| -> Option<BTreeMap<String, String>> {
            (!kv.is_empty()).then(|| {
                kv.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
        };
        let node = Node {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                labels: map(labels),
                annotations: map(annotations),
                ..Default::default()
            },
            ..Default::default()
        };
        self.create_cluster(&node).await
    }

    /// A Node object named `name`, deleted on drop.
    pub async fn create_node(&self, name: &str) -> Result<Temp<Node>> {
        self.create_node_with_labels(name, &[], &[]).await
    }

    /// A fresh Namespace `prefix-xxxxxxxx`, deleted on drop (it then stays Terminating on this
    /// apiserver, which is harmless: the name is never used again).
    pub async fn create_namespace(&self, prefix: &str) -> Result<Temp<Namespace>> {
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(unique_name(prefix)),
                ..Default::default()
            },
            ..Default::default()
        };
        self.create_cluster(&ns).await
    }
}

/// An object a test created: deleted (a missing one is fine) when dropped, even when the test
/// panicked.
pub struct Temp<K> {
    pub name: String,
    pub namespace: Option<String>,
    /// The object as the create call returned it.
    pub object: K,
    delete: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl<K> Drop for Temp<K> {
    fn drop(&mut self) {
        if let Some(delete) = self.delete.take() {
            delete();
        }
    }
}

/// Deletes `name` through the Api `make` builds, on a runtime of its own (a drop may run
/// outside any runtime, or inside one that must not be blocked). A missing object is fine.
fn deleter<K>(
    config: kube::Config,
    name: String,
    make: fn(kube::Client, Option<&str>) -> Api<K>,
    namespace: Option<String>,
) -> Box<dyn FnOnce() + Send + Sync>
where
    K: Resource + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    Box::new(move || {
        let result = on_own_runtime(async move {
            let client = kube::Client::try_from(config)?;
            match make(client, namespace.as_deref())
                .delete(&name, &DeleteParams::default())
                .await
            {
                Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
                other => other.map(drop),
            }
        });
        if let Err(e) = result {
            eprintln!("clean-up: deleting a test object failed: {e:#}");
        }
    })
}

/// Calls `check` every 100 ms until it returns `Ok`, for at most `timeout`. `check` says why
/// the condition does not hold yet (`Err(reason)`); the last reason is in the error on timeout.
pub async fn wait_for_within<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(v) => return Ok(v),
            Err(reason) if Instant::now() >= deadline => {
                bail!("{what}: not within {timeout:?}; last: {reason}")
            }
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// [`wait_for_within`] with the default deadline [`WAIT`].
pub async fn wait_for<T, F, Fut>(what: &str, check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    wait_for_within(what, WAIT, check).await
}

/// Waits (up to [`WAIT`]) until the object `name` exists and `pred` holds for it; returns it.
/// On timeout the error shows the object's status, labels and annotations, or why it could not
/// be read.
pub async fn wait_for_object<K>(
    api: &Api<K>,
    name: &str,
    what: &str,
    pred: impl Fn(&K) -> bool,
) -> Result<K>
where
    K: Resource + Clone + Debug + DeserializeOwned + k8s_openapi::serde::Serialize,
{
    wait_for(
        &format!("{} {name}: {what}", api.resource_url()),
        || async {
            match api.get_opt(name).await {
                Ok(Some(obj)) if pred(&obj) => Ok(obj),
                Ok(Some(obj)) => Err(format!(
                    "status {}, labels {:?}, annotations {:?}",
                    serde_json::to_value(&obj)
                        .map(|v| v["status"].to_string())
                        .unwrap_or_default(),
                    obj.labels(),
                    obj.annotations()
                )),
                Ok(None) => Err("it does not exist".into()),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await
}

/// Applies the chart's CRDs (`data.fluid.io`: Dataset, CacheRuntime; server-side apply, so
/// re-running, or another test doing the same, is fine) and waits until the API serves them.
pub async fn apply_crds(kube: &Kube) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(kube.client.clone());
    for c in csi_controller::crd::crds() {
        let name = c.name_any();
        api.patch(
            &name,
            &PatchParams::apply("fluid-tests").force(),
            &Patch::Apply(&c),
        )
        .await
        .with_context(|| format!("applying CRD {name}"))?;
        wait_for_object(&api, &name, "Established", |c| {
            c.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            })
        })
        .await?;
    }
    Ok(())
}

/// The value of label `key` of an object, if set.
pub fn label<'a, K: Resource>(obj: &'a K, key: &str) -> Option<&'a str> {
    obj.meta()
        .labels
        .as_ref()
        .and_then(|l| l.get(key))
        .map(String::as_str)
}

/// The value of annotation `key` of an object, if set.
pub fn annotation<'a, K: Resource>(obj: &'a K, key: &str) -> Option<&'a str> {
    obj.meta()
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}
