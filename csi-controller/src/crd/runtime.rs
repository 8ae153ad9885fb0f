//! `CacheRuntime`: how a Dataset is cached, in the place of Fluid's per-engine runtimes
//! (AlluxioRuntime, JuiceFSRuntime, ...). Like those, it binds to the Dataset of the same name
//! and namespace, and its `tieredstore` and `fuse` sections use Fluid's field names.

// clippy reads the repeated `type_ = ...` of separate `printcolumn(...)` entries as duplicates.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ConditionStatus;

/// The desired cache of the Dataset with the same name and namespace.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "data.fluid.io",
    version = "v1alpha1",
    kind = "CacheRuntime",
    plural = "cacheruntimes",
    namespaced,
    status = "CacheRuntimeStatus",
    category = "fluid",
    derive = "PartialEq",
    doc = "The cache tiers and FUSE settings of the Dataset with the same name and namespace",
    printcolumn(
        name = "Ready Fuses",
        type_ = "integer",
        json_path = ".status.fuseNumberReady"
    ),
    printcolumn(
        name = "Desired Fuses",
        type_ = "integer",
        json_path = ".status.fuseNumberDesired",
        priority = "10"
    ),
    printcolumn(name = "Fuse Phase", type_ = "string", json_path = ".status.fusePhase"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct CacheRuntimeSpec {
    pub tieredstore: TieredStore,
    /// Cache block size, e.g. `4MiB` (fluid-fuse's default when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<String>,
    #[serde(default)]
    pub fuse: FuseSpec,
}

/// Fluid's `TieredStore`: cache tiers, fastest first.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct TieredStore {
    #[schemars(length(min = 1))]
    pub levels: Vec<Level>,
}

/// Fluid's `Level`: one cache tier.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct Level {
    /// Lower case like Fluid's (`mediumtype`, not `mediumType`).
    pub mediumtype: MediumType,
    /// Cache directory on the node (SSD/HDD); unused for MEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Byte quota of the tier, a Kubernetes quantity such as `2Gi`.
    pub quota: String,
    /// Eviction starts above this fraction of the quota, e.g. `"0.95"` (a string, as Fluid's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high: Option<String>,
    /// Eviction stops below this fraction of the quota, e.g. `"0.7"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low: Option<String>,
}

/// Fluid's `MediumType`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum MediumType {
    MEM,
    SSD,
    HDD,
}

/// Fluid's FUSE settings (the subset that we implement).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FuseSpec {
    /// FUSE runs only on nodes with these labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default)]
    pub clean_policy: CleanPolicy,
}

/// Fluid's `FuseCleanPolicy`: when a node's FUSE process is stopped.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum CleanPolicy {
    /// When no pod on the node uses the Dataset any more.
    OnDemand,
    /// Only when the runtime is deleted (Fluid's default), so pods restart without a cold mount.
    #[default]
    OnRuntimeDeleted,
}

/// The observed state of the runtime: Fluid's runtime status basics for FUSE.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CacheRuntimeStatus {
    #[serde(default)]
    pub fuse_number_desired: i32,
    #[serde(default)]
    pub fuse_number_scheduled: i32,
    #[serde(default)]
    pub fuse_number_ready: i32,
    #[serde(default)]
    pub fuse_number_available: i32,
    /// A bare enum in the schema, as `DatasetStatus::phase`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "RuntimePhase")]
    pub fuse_phase: Option<RuntimePhase>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<RuntimeCondition>,
}

/// Fluid's `RuntimePhase` (its empty `None` phase is an absent field here).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RuntimePhase {
    NotReady,
    PartialReady,
    Ready,
}

/// Fluid's `RuntimeCondition`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeCondition {
    /// e.g. `FusesReady`.
    #[serde(rename = "type")]
    pub type_: String,
    pub status: ConditionStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
}
