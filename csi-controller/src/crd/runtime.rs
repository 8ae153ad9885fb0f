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

use fluid_volume::tier::Tiers;

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
    /// The nodes whose caches together are the Dataset's cache, by name: each block has one
    /// owner among those that answer (Fluid's worker view; here the FUSE daemons are the cache).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<CacheMember>,
}

/// One node of a Dataset's cache.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CacheMember {
    pub node: String,
    /// Where the other members read its blocks (`HOST:PORT`).
    pub endpoint: String,
    /// It answered the last stats call: it owns a share of the blocks.
    pub ready: bool,
    /// The bytes of the blocks it owns, e.g. `1.50GiB` (absent while it does not answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached: Option<String>,
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

impl CacheRuntimeSpec {
    /// The tiers as `fluid-fuse --tier` specs, fastest first: `mem:QUOTA` or
    /// `ssd:PATH:QUOTA[,high=H][,low=L]`. Errors name the level and field.
    pub fn tier_specs(&self) -> Result<Tiers, (String, String)> {
        let mut specs = Vec::with_capacity(self.tieredstore.levels.len());
        for (i, level) in self.tieredstore.levels.iter().enumerate() {
            let field = |f: &str| format!("spec.tieredstore.levels[{i}].{f}");
            let quota = quantity_bytes(&level.quota).map_err(|m| (field("quota"), m))?;
            let mut spec = match level.mediumtype {
                MediumType::MEM => format!("mem:{quota}"),
                MediumType::SSD | MediumType::HDD => {
                    let medium = if level.mediumtype == MediumType::SSD {
                        "ssd"
                    } else {
                        "hdd"
                    };
                    let path = level
                        .path
                        .as_deref()
                        .filter(|p| !p.trim().is_empty())
                        .ok_or_else(|| {
                            (field("path"), "required for SSD and HDD levels".to_string())
                        })?;
                    if path.contains([':', ',', ';']) {
                        return Err((
                            field("path"),
                            format!("{path:?}: ':', ',' and ';' are not allowed in a cache path"),
                        ));
                    }
                    if let Some(why) = refused_cache_path(path) {
                        return Err((field("path"), format!("{path:?}: {why}")));
                    }
                    format!("{medium}:{path}:{quota}")
                }
            };
            for (name, value) in [("high", &level.high), ("low", &level.low)] {
                if let Some(v) = value {
                    let x: f64 = v
                        .trim()
                        .parse()
                        .ok()
                        .filter(|x: &f64| (0.0..=1.0).contains(x))
                        .ok_or_else(|| {
                            (
                                field(name),
                                format!("{v:?}: expected a fraction such as \"0.9\""),
                            )
                        })?;
                    if level.mediumtype != MediumType::MEM {
                        spec.push_str(&format!(",{name}={x}"));
                    }
                }
            }
            specs.push(spec);
        }
        // The rules on the list as a whole (memory first, no folder twice).
        Tiers::parse_each(&specs)
            .map_err(|e| ("spec.tieredstore.levels".to_string(), e.to_string()))
    }
}

/// Why a CacheRuntime's disk tier path is refused before any node sees it: root makes, fills
/// and removes the folder, so it must name one place as written (absolute, no `.`, `..`, `//`
/// or trailing `/`) and not lie in the kernel's file systems (`/proc/1/root/...` is the host's
/// root through PID 1). The node checks it against its cache roots as well.
pub fn refused_cache_path(path: &str) -> Option<&'static str> {
    if !path.starts_with('/') {
        return Some("must be an absolute path");
    }
    if !path
        .split('/')
        .skip(1)
        .all(|c| !c.is_empty() && c != "." && c != "..")
    {
        return Some("must be an absolute path without '..', '.', '//' or a trailing '/'");
    }
    let kernel = ["/proc", "/sys", "/dev"]
        .iter()
        .any(|k| path == *k || path.strip_prefix(k).is_some_and(|r| r.starts_with('/')));
    if kernel {
        return Some("cache folders may not lie under /proc, /sys or /dev");
    }
    None
}

/// A Kubernetes quantity of bytes (`2Gi`, `500Mi`, `1G`, `1073741824`) as a whole number.
pub fn quantity_bytes(q: &str) -> Result<u64, String> {
    let t = q.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: u64 = match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        _ => {
            return Err(format!(
                "{q:?}: expected a whole number of bytes with an optional suffix Ki, Mi, Gi, Ti, Pi, k, M, G, T or P"
            ));
        }
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{q:?}: expected a positive whole number of bytes"))
}

#[cfg(test)]
mod tier_tests {
    use super::*;

    fn level(m: MediumType, path: Option<&str>, quota: &str) -> Level {
        Level {
            mediumtype: m,
            path: path.map(str::to_string),
            quota: quota.into(),
            high: None,
            low: None,
        }
    }

    #[test]
    fn levels_become_tier_specs() {
        let mut ssd = level(MediumType::SSD, Some("/var/cache/fluid"), "100Gi");
        ssd.high = Some("0.95".into());
        ssd.low = Some("0.7".into());
        let spec = CacheRuntimeSpec {
            tieredstore: TieredStore {
                levels: vec![level(MediumType::MEM, None, "2Gi"), ssd],
            },
            block_size: None,
            fuse: FuseSpec::default(),
        };
        assert_eq!(
            spec.tier_specs().unwrap().to_strings(),
            vec!["mem:2GiB", "ssd:/var/cache/fluid:100GiB,high=0.95,low=0.7"]
        );
    }

    #[test]
    fn bad_levels_name_the_field() {
        let spec = |l: Level| CacheRuntimeSpec {
            tieredstore: TieredStore { levels: vec![l] },
            block_size: None,
            fuse: FuseSpec::default(),
        };
        let err = spec(level(MediumType::SSD, None, "1Gi"))
            .tier_specs()
            .unwrap_err();
        assert_eq!(err.0, "spec.tieredstore.levels[0].path");
        let err = spec(level(MediumType::MEM, None, "2GB"))
            .tier_specs()
            .unwrap_err();
        assert_eq!(err.0, "spec.tieredstore.levels[0].quota");
        let mut l = level(MediumType::HDD, Some("/d"), "1Gi");
        l.low = Some("lots".into());
        assert_eq!(
            spec(l).tier_specs().unwrap_err().0,
            "spec.tieredstore.levels[0].low"
        );
        for (path, why) in [
            ("/proc/1/root/var/lib/kubelet", "/proc, /sys or /dev"),
            ("/proc", "/proc, /sys or /dev"),
            ("/sys/fs/cgroup/x", "/proc, /sys or /dev"),
            ("/dev/shm/fluid", "/proc, /sys or /dev"),
            ("/var/cache/fluid/../../lib/kubelet", "without '..'"),
            ("/var/cache/./fluid", "without '..'"),
            ("/var/cache//fluid", "without '..'"),
            ("/var/cache/fluid/", "without '..'"),
            ("var/cache/fluid", "absolute"),
        ] {
            let err = spec(level(MediumType::SSD, Some(path), "1Gi"))
                .tier_specs()
                .unwrap_err();
            assert_eq!(err.0, "spec.tieredstore.levels[0].path", "{path}");
            assert!(err.1.contains(why), "{path}: {}", err.1);
        }
        for ok in ["/var/cache/fluid", "/procedures/cache", "/devices/x"] {
            spec(level(MediumType::SSD, Some(ok), "1Gi"))
                .tier_specs()
                .unwrap();
        }
        assert_eq!(quantity_bytes("1500M").unwrap(), 1_500_000_000);
        assert!(quantity_bytes("0").is_err());
        assert!(quantity_bytes("1.5Gi").is_err());
    }
}
