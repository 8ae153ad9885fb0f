//! Fluid's `Dataset`: what to cache (the mounts) and where (affinity, placement). The field
//! names and JSON shapes are Fluid's (`api/v1alpha1/dataset_types.go`), so a Fluid manifest
//! applies unchanged; fields that we do not implement yet are left out rather than accepted and
//! silently ignored (the API server prunes unknown fields).

// clippy reads the repeated `type_ = ...` of separate `printcolumn(...)` entries as duplicates.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::NodeSelector;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ConditionStatus;

/// Schemes that fluid-fuse can read (`fluid_volume::mountpoint`); anything else is refused by
/// the API server instead of failing later on a node.
pub const MOUNT_POINT_PATTERN: &str = r"^(s3|oss|hdfs|local)://.+";

/// The desired state of a Dataset.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "data.fluid.io",
    version = "v1alpha1",
    kind = "Dataset",
    plural = "datasets",
    namespaced,
    status = "DatasetStatus",
    category = "fluid",
    derive = "PartialEq",
    doc = "A set of remote storage locations (mounts) cached together and mounted by pods as a PVC of the same name",
    // Fluid's columns, in Fluid's order. No short name: `ds` is DaemonSets'.
    printcolumn(name = "Ufs Total Size", type_ = "string", json_path = ".status.ufsTotal"),
    printcolumn(name = "Cached", type_ = "string", json_path = ".status.cacheStates.cached"),
    printcolumn(name = "Cache Capacity", type_ = "string", json_path = ".status.cacheStates.cacheCapacity"),
    printcolumn(name = "Cached Percentage", type_ = "string", json_path = ".status.cacheStates.cachedPercentage"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Total Files", type_ = "string", json_path = ".status.fileNum", priority = "11"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct DatasetSpec {
    /// The remote locations, unioned into one tree (one mount may sit at the root).
    #[schemars(length(min = 1))]
    pub mounts: Vec<DatasetMount>,
    /// Fluid's options applied to every mount (a mount's own options win).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub shared_options: BTreeMap<String, String>,
    /// Fluid's encrypt options applied to every mount.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shared_encrypt_options: Vec<EncryptOption>,
    /// Access modes of the PV (Fluid's `[]PersistentVolumeAccessMode`), e.g. `ReadOnlyMany`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_modes: Vec<String>,
    /// Nodes allowed to hold the cache (Fluid's `CacheableNodeAffinity`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_affinity: Option<CacheableNodeAffinity>,
    /// Whether the cache may share a node with other Datasets' caches.
    #[serde(default)]
    pub placement: Placement,
}

/// One remote location. Field names are those of `fluid_volume::dataset::MountSpec`, which is
/// what the node serves; see the `From` impl.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatasetMount {
    /// The remote URL, e.g. `s3://bucket/prefix`, `oss://bucket/dir`, `hdfs://nn:8020/data`,
    /// `local:///mnt/data`.
    #[schemars(pattern(MOUNT_POINT_PATTERN))]
    pub mount_point: String,
    /// The mount's name; also its directory in the tree unless `path` says otherwise.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Where the mount sits in the tree (`/` for the root); default `/<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Source options (endpoint, region, ...). Not for secrets: use `encryptOptions`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// Options whose values come from Secrets in the Dataset's namespace (credentials).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub encrypt_options: Vec<EncryptOption>,
}

/// An option taken from a Secret: Fluid's `EncryptOption`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EncryptOption {
    /// The option name, e.g. `access-key-id`.
    pub name: String,
    pub value_from: EncryptOptionSource,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EncryptOptionSource {
    pub secret_key_ref: SecretKeySelector,
}

/// A key of a Secret in the Dataset's own namespace (Fluid's, without a namespace field).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct SecretKeySelector {
    pub name: String,
    pub key: String,
}

/// Fluid's `CacheableNodeAffinity`: the cache is only placed on nodes matching `required`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct CacheableNodeAffinity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<NodeSelector>,
}

/// Fluid's `PlacementMode`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Placement {
    /// At most one Dataset's cache per node.
    Exclusive,
    /// Caches of several Datasets may share a node (Fluid's default).
    #[default]
    Shared,
}

/// The observed state of a Dataset, written by the controller.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatasetStatus {
    /// Absent until the controller first looks at the Dataset (Fluid's empty phase).
    /// The schema is the bare enum: `Option`'s would add `null` to the enum values, which the
    /// API server rejects (and we never write null).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "DatasetPhase")]
    pub phase: Option<DatasetPhase>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<DatasetCondition>,
    /// Total size of the remote data, human readable (e.g. `52.18GiB`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ufs_total: Option<String>,
    /// Number of files in the remote data, as a string like Fluid's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_num: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_states: Option<CacheStates>,
    /// The mounts the cache currently serves (a copy of `spec.mounts` once bound).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<DatasetMount>,
}

/// Fluid's `DatasetPhase` (its empty `None` phase is an absent field here).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum DatasetPhase {
    Pending,
    Bound,
    NotBound,
    Failed,
}

/// Fluid's `cacheStates` map with the keys that we report; values are human readable strings
/// (`2.00GiB`, `45.3%`) because that is what `kubectl get` prints.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CacheStates {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_capacity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_percentage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_hit_ratio: Option<String>,
}

/// Fluid's `DatasetCondition`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatasetCondition {
    /// e.g. `Ready`, `NotReady`.
    #[serde(rename = "type")]
    pub type_: String,
    pub status: ConditionStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
}

/// The node-side mount, so that the catalogue and the reconcilers build volume contexts the
/// same way. Secret references cannot travel in a volume context: they are kept as a YAML
/// value in `encrypt_options` for the caller to resolve or drop.
impl From<DatasetMount> for fluid_volume::dataset::MountSpec {
    fn from(m: DatasetMount) -> Self {
        let encrypt_options = (!m.encrypt_options.is_empty()).then(|| {
            serde_yaml::to_value(&m.encrypt_options).expect("encrypt options always serialize")
        });
        fluid_volume::dataset::MountSpec {
            mount_point: m.mount_point,
            name: m.name,
            path: m.path,
            options: m.options,
            read_only: m.read_only,
            encrypt_options,
        }
    }
}
