//! Fluid's `DataLoad`: warm a Dataset's cache ahead of the jobs that read it, once, on a cron
//! schedule, or whenever the Dataset changes. Field names are Fluid's
//! (`api/v1alpha1/dataload_types.go`); the status adds what was loaded.

// clippy reads the repeated `type_ = ...` of separate `printcolumn(...)` entries as duplicates.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::RuntimeCondition;

/// What to load and when.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "data.fluid.io",
    version = "v1alpha1",
    kind = "DataLoad",
    plural = "dataloads",
    namespaced,
    status = "DataLoadStatus",
    category = "fluid",
    derive = "PartialEq",
    doc = "Loads paths of a Dataset into the cache of the nodes that serve it",
    printcolumn(name = "Dataset", type_ = "string", json_path = ".spec.dataset.name"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Loaded", type_ = "string", json_path = ".status.loaded"),
    printcolumn(name = "Duration", type_ = "string", json_path = ".status.duration"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct DataLoadSpec {
    /// The Dataset to load; it must be in the DataLoad's own namespace.
    pub dataset: TargetDataset,
    /// Also list every directory first (the namespace cache); the warm-up walks the tree in
    /// any case, so this is accepted for Fluid compatibility.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub load_metadata: bool,
    /// Paths inside the Dataset to load; empty: the whole Dataset.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target: Vec<TargetPath>,
    #[serde(default)]
    pub policy: Policy,
    /// With `policy: Cron`: a cron schedule, five fields (`*/30 * * * *`), or six with seconds
    /// first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// Delete the DataLoad this long after it finished (Once and OnEvent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ttl_seconds_after_finished: Option<i64>,
}

/// Fluid's `TargetDataset`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct TargetDataset {
    #[schemars(length(min = 1))]
    pub name: String,
    /// Must be the DataLoad's namespace when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Fluid's `TargetPath`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct TargetPath {
    /// A path inside the Dataset, e.g. `/train`.
    #[schemars(length(min = 1))]
    pub path: String,
    /// How many nodes load it (nodes already serving the Dataset); default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub replicas: Option<i32>,
}

/// Fluid's `Policy`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Policy {
    #[default]
    Once,
    Cron,
    /// Again each time the Dataset's spec changes.
    OnEvent,
}

/// Fluid's `DataLoad` phases.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum DataLoadPhase {
    Pending,
    Executing,
    Complete,
    Failed,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataLoadStatus {
    /// A bare enum in the schema, as `DatasetStatus::phase`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "DataLoadPhase")]
    pub phase: Option<DataLoadPhase>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<RuntimeCondition>,
    /// How long the last run took, e.g. `12s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// Files and bytes the last run went through (loaded, or found cached already).
    #[serde(default)]
    pub files_loaded: u64,
    #[serde(default)]
    pub bytes_loaded: u64,
    /// Of `bytesLoaded`, what was in the cache before the run.
    #[serde(default)]
    pub bytes_already_cached: u64,
    /// `bytesLoaded` for people, e.g. `1.50GiB`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loaded: Option<String>,
    /// The nodes the last run loaded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_time: Option<Time>,
    /// The Dataset generation the last run loaded (OnEvent runs again when it changes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset_generation: Option<i64>,
}
