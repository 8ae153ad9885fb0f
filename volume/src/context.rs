//! What a CSI volume carries from the controller to the node: the dataset's mounts and cache
//! settings in the volume context, and credentials in the CSI secrets (never in the context).

use std::collections::{BTreeMap, HashMap};

use crate::dataset::{self, Mount, MountSpec};
use crate::error::{Error, Result};
use crate::options::is_secret;
use crate::size::BlockSize;
use crate::tier::Tiers;

/// `namespace/name` of the Dataset, for messages and node labels.
pub const DATASET: &str = "fluid.io/dataset";
/// The mounts as JSON (`spec.mounts[]` with Fluid's field names), secret options removed.
pub const MOUNTS: &str = "fluid.io/mounts";
/// Cache tiers in `fluid-fuse --tier` form, separated by `;`. Absent: the node's defaults.
pub const TIERS: &str = "fluid.io/tiers";
/// Cache block size, e.g. `4MiB`. Absent: the node's default.
pub const BLOCK_SIZE: &str = "fluid.io/blockSize";
/// A path inside the dataset that NodePublish mounts instead of the root.
pub const SUB_PATH: &str = "subPath";
/// The node-stage secret key the controller's Dataset reconciler writes: a JSON list with, per
/// mount in order, a map of option name to value (Secret keys cannot hold `NAME/OPTION`).
pub const MOUNT_SECRETS: &str = "fluid.io.mountSecrets";

/// `(namespace, name)` of a Dataset written `namespace/name` (as in the volume context's
/// [`DATASET`]); `None` unless both parts are non-empty and there is exactly one `/`.
pub fn parse_dataset(s: &str) -> Option<(&str, &str)> {
    let (namespace, name) = s.split_once('/')?;
    (!namespace.is_empty() && !name.is_empty() && !name.contains('/')).then_some((namespace, name))
}

/// `Exclusive` when the Dataset's cache must have its nodes to itself; absent: shared.
pub const PLACEMENT: &str = "fluid.io/placement";
/// The value of [`PLACEMENT`] for an exclusive Dataset (Fluid's `placement: Exclusive`).
pub const EXCLUSIVE: &str = "Exclusive";

/// When a node stops the volume's daemon (Fluid's `fuse.cleanPolicy`); absent: `OnDemand`.
pub const CLEAN_POLICY: &str = "fluid.io/cleanPolicy";

/// Fluid's FUSE clean policy, as the node plugin applies it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CleanPolicy {
    /// The daemon stops at NodeUnstage, when no pod on the node uses the volume.
    #[default]
    OnDemand,
    /// The daemon and its cache outlive NodeUnstage; they stop when the controller releases
    /// the Dataset (its CacheRuntime or the Dataset itself was deleted).
    OnRuntimeDeleted,
}

impl CleanPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            CleanPolicy::OnDemand => "OnDemand",
            CleanPolicy::OnRuntimeDeleted => "OnRuntimeDeleted",
        }
    }

    fn parse(s: &str) -> Result<CleanPolicy> {
        match s {
            "" | "OnDemand" => Ok(CleanPolicy::OnDemand),
            "OnRuntimeDeleted" => Ok(CleanPolicy::OnRuntimeDeleted),
            other => Err(Error::invalid(
                format!("volume_context.{CLEAN_POLICY}"),
                format!("{other:?}: expected OnDemand or OnRuntimeDeleted"),
            )),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct VolumeContext {
    pub dataset: Option<String>,
    pub mounts: Vec<MountSpec>,
    /// Absent: the node's default tiers.
    pub tiers: Option<Tiers>,
    /// Absent: the node's default block size.
    pub block_size: Option<BlockSize>,
    pub sub_path: Option<String>,
    /// No other Dataset's cache may share a node with this one.
    pub exclusive: bool,
    pub clean_policy: CleanPolicy,
}

impl VolumeContext {
    /// Validates the fields that are still text (the mounts and the sub path) so a bad volume
    /// fails at CreateVolume, not at mount time; tiers and block size were checked when built.
    pub fn validate(&self) -> Result<Vec<Mount>> {
        for (i, m) in self.mounts.iter().enumerate() {
            if let Some(k) = m.options.keys().find(|k| is_secret(k)) {
                return Err(Error::invalid(
                    format!("mounts[{i}].options.{k}"),
                    "secret values go in CSI secrets or encryptOptions, not in the volume context",
                ));
            }
        }
        if let Some(sub) = &self.sub_path {
            check_sub_path(sub)?;
        }
        dataset::resolve(self.mounts.clone(), "mounts")
    }

    pub fn to_map(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        // Serializing plain strings and maps cannot fail.
        m.insert(
            MOUNTS.to_string(),
            serde_json::to_string(&self.mounts).unwrap_or_default(),
        );
        if let Some(d) = &self.dataset {
            m.insert(DATASET.to_string(), d.clone());
        }
        if let Some(tiers) = &self.tiers {
            m.insert(TIERS.to_string(), tiers.to_string());
        }
        if let Some(bs) = &self.block_size {
            m.insert(BLOCK_SIZE.to_string(), bs.to_string());
        }
        if let Some(sub) = &self.sub_path {
            m.insert(SUB_PATH.to_string(), sub.clone());
        }
        if self.exclusive {
            m.insert(PLACEMENT.to_string(), EXCLUSIVE.to_string());
        }
        if self.clean_policy != CleanPolicy::OnDemand {
            m.insert(
                CLEAN_POLICY.to_string(),
                self.clean_policy.as_str().to_string(),
            );
        }
        m
    }

    pub fn from_map(ctx: &HashMap<String, String>) -> Result<Self> {
        let mounts_json = ctx
            .get(MOUNTS)
            .ok_or_else(|| Error::invalid(format!("volume_context.{MOUNTS}"), "missing"))?;
        let mounts: Vec<MountSpec> = serde_json::from_str(mounts_json)
            .map_err(|e| Error::invalid(format!("volume_context.{MOUNTS}"), e.to_string()))?;
        let vc = VolumeContext {
            dataset: ctx.get(DATASET).cloned(),
            mounts,
            tiers: ctx
                .get(TIERS)
                .filter(|t| !t.trim().is_empty())
                .map(|t| Tiers::parse_list(t, &format!("volume_context.{TIERS}")))
                .transpose()?,
            block_size: ctx
                .get(BLOCK_SIZE)
                .filter(|b| !b.trim().is_empty())
                .map(|b| BlockSize::parse(b, &format!("volume_context.{BLOCK_SIZE}")))
                .transpose()?,
            sub_path: ctx.get(SUB_PATH).cloned().filter(|s| !s.is_empty()),
            exclusive: match ctx.get(PLACEMENT).map(String::as_str) {
                None | Some("") | Some("Shared") => false,
                Some(EXCLUSIVE) => true,
                Some(other) => {
                    return Err(Error::invalid(
                        format!("volume_context.{PLACEMENT}"),
                        format!("{other:?}: expected {EXCLUSIVE} or Shared"),
                    ));
                }
            },
            clean_policy: CleanPolicy::parse(ctx.get(CLEAN_POLICY).map_or("", String::as_str))?,
        };
        vc.validate()?;
        Ok(vc)
    }

    /// The mounts with credentials from CSI secrets added: a key `OPTION` applies to every
    /// mount, `MOUNTNAME/OPTION` to one, and [`MOUNT_SECRETS`] lists options per mount.
    pub fn mounts_with_secrets(&self, secrets: &HashMap<String, String>) -> Result<Vec<MountSpec>> {
        let mut mounts = self.mounts.clone();
        for (key, value) in secrets {
            if key == MOUNT_SECRETS {
                // The error names the key only: the value is a secret.
                let per_mount: Vec<BTreeMap<String, String>> = serde_json::from_str(value)
                    .map_err(|_| {
                        Error::invalid(
                            format!("secrets.{MOUNT_SECRETS}"),
                            "expected a JSON list of option maps, one per mount",
                        )
                    })?;
                for (m, options) in mounts.iter_mut().zip(per_mount) {
                    m.options.extend(options);
                }
                continue;
            }
            match key.split_once('/') {
                Some((name, opt)) => {
                    for m in mounts.iter_mut().filter(|m| m.name == name) {
                        m.options.insert(opt.to_string(), value.clone());
                    }
                }
                None => {
                    for m in &mut mounts {
                        m.options.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        Ok(mounts)
    }

    /// Whether every mount is read-only (the file system is read-only today either way).
    pub fn read_only(&self) -> bool {
        self.mounts.iter().all(|m| m.read_only)
    }
}

/// A sub path is relative and stays inside the dataset.
pub fn check_sub_path(sub: &str) -> Result<()> {
    if sub.starts_with('/') || sub.split('/').any(|c| c == ".." || c == ".") || sub.contains('\0') {
        return Err(Error::invalid(
            SUB_PATH,
            format!("{sub:?} must be a relative path without '.' or '..'"),
        ));
    }
    Ok(())
}

/// Writes mounts as a dataset YAML file readable by `fluid-fuse mount --dataset`, owner-only
/// because it may hold credentials.
pub fn write_dataset_file(path: &std::path::Path, mounts: &[MountSpec]) -> Result<()> {
    #[derive(serde::Serialize)]
    struct Doc<'a> {
        mounts: &'a [MountSpec],
    }
    let text = serde_yaml::to_string(&Doc { mounts })
        .map_err(|e| Error::invalid("mounts", e.to_string()))?;
    // It holds credentials: readable by its owner only, from the first byte.
    crate::atomic::write(path, text.as_bytes(), 0o600)
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> VolumeContext {
        VolumeContext {
            dataset: Some("ml/imagenet".into()),
            mounts: vec![MountSpec {
                mount_point: "s3://imagenet/train".into(),
                name: "train".into(),
                options: BTreeMap::from([("endpoint".into(), "http://127.0.0.1:8333".into())]),
                ..Default::default()
            }],
            tiers: Some(
                Tiers::parse_list("mem:1GiB;ssd:/var/cache/fluid:10GiB,high=0.9,low=0.5", "t")
                    .unwrap(),
            ),
            block_size: Some(BlockSize::DEFAULT),
            sub_path: None,
            exclusive: true,
            clean_policy: CleanPolicy::OnDemand,
        }
    }

    #[test]
    fn dataset_names() {
        assert_eq!(parse_dataset("ml/imagenet"), Some(("ml", "imagenet")));
        for bad in ["", "imagenet", "/x", "x/", "a/b/c"] {
            assert_eq!(parse_dataset(bad), None, "{bad}");
        }
    }

    #[test]
    fn round_trips_through_the_context_map() {
        let map: HashMap<String, String> = ctx().to_map().into_iter().collect();
        assert_eq!(VolumeContext::from_map(&map).unwrap(), ctx());
    }

    #[test]
    fn clean_policy_defaults_to_on_demand() {
        let mut c = ctx();
        c.clean_policy = CleanPolicy::OnRuntimeDeleted;
        let mut map: HashMap<String, String> = c.to_map().into_iter().collect();
        assert_eq!(VolumeContext::from_map(&map).unwrap(), c);
        map.remove(CLEAN_POLICY);
        let bare = VolumeContext::from_map(&map).unwrap();
        assert_eq!(bare.clean_policy, CleanPolicy::OnDemand);
        map.insert(CLEAN_POLICY.into(), "Never".into());
        let err = VolumeContext::from_map(&map).unwrap_err().to_string();
        assert!(err.contains(CLEAN_POLICY) && err.contains("Never"), "{err}");
    }

    #[test]
    fn placement() {
        let mut map: HashMap<String, String> = ctx().to_map().into_iter().collect();
        assert_eq!(map.get(PLACEMENT).map(String::as_str), Some(EXCLUSIVE));
        map.insert(PLACEMENT.into(), "Shared".into());
        assert!(!VolumeContext::from_map(&map).unwrap().exclusive);
        map.insert(PLACEMENT.into(), "Sometimes".into());
        let err = VolumeContext::from_map(&map).unwrap_err().to_string();
        assert!(err.contains(PLACEMENT), "{err}");
    }

    #[test]
    fn refuses_secrets_and_bad_fields() {
        let mut c = ctx();
        c.mounts[0].options.insert("secret-key".into(), "x".into());
        assert!(c.validate().unwrap_err().to_string().contains("secret-key"));
        let mut map: HashMap<String, String> = ctx().to_map().into_iter().collect();
        for (key, bad) in [
            (TIERS, "ssd:/x:1GiB;mem:1GiB"),
            (TIERS, "mem:lots"),
            (BLOCK_SIZE, "128MiB"),
        ] {
            map.insert(key.into(), bad.into());
            let err = VolumeContext::from_map(&map).unwrap_err().to_string();
            assert!(
                err.contains(&format!("volume_context.{key}")),
                "{bad}: {err}"
            );
            map = ctx().to_map().into_iter().collect();
        }
        for bad in ["/abs", "../up", "a/../../b", "./x"] {
            assert!(check_sub_path(bad).is_err(), "{bad}");
        }
        assert!(check_sub_path("a/b c").is_ok());
    }

    #[test]
    fn every_secret_spelling_is_refused_and_never_shown() {
        for (store, table) in crate::options::STORES {
            for option in table.iter().filter(|o| o.secret) {
                for name in option.names {
                    let mut c = ctx();
                    c.mounts[0]
                        .options
                        .insert(name.to_string(), "S3CRET-VALUE".into());
                    let err = c.validate().unwrap_err().to_string();
                    assert!(
                        err.contains(&format!("options.{name}")),
                        "{store} {name}: {err}"
                    );
                    assert!(!err.contains("S3CRET-VALUE"), "{err}");
                    let shown = format!("{:?}", c.mounts[0]);
                    assert!(!shown.contains("S3CRET-VALUE"), "{store} {name}: {shown}");
                }
            }
        }
    }

    #[test]
    fn secrets_apply_to_all_or_one_mount() {
        let mut c = ctx();
        c.mounts.push(MountSpec {
            mount_point: "s3://b".into(),
            name: "other".into(),
            ..Default::default()
        });
        let secrets = HashMap::from([
            ("access-key".to_string(), "AK".to_string()),
            ("other/secret-key".to_string(), "SK".to_string()),
        ]);
        let m = c.mounts_with_secrets(&secrets).unwrap();
        assert_eq!(
            m[0].options.get("access-key").map(String::as_str),
            Some("AK")
        );
        assert_eq!(m[0].options.get("secret-key"), None);
        assert_eq!(
            m[1].options.get("secret-key").map(String::as_str),
            Some("SK")
        );
        assert!(
            !format!("{m:?}").contains("SK\""),
            "Debug must not show secret values"
        );
        let per_mount = r#"[{"access-key":"A0"},{"access-key":"A1","secret-key":"S1"}]"#;
        let secrets = HashMap::from([(MOUNT_SECRETS.to_string(), per_mount.to_string())]);
        let m = c.mounts_with_secrets(&secrets).unwrap();
        assert_eq!(
            m[0].options.get("access-key").map(String::as_str),
            Some("A0")
        );
        assert_eq!(
            m[1].options.get("secret-key").map(String::as_str),
            Some("S1")
        );
        let bad = HashMap::from([(MOUNT_SECRETS.to_string(), "S3CRET".to_string())]);
        let err = c.mounts_with_secrets(&bad).unwrap_err().to_string();
        assert!(
            err.contains(MOUNT_SECRETS) && !err.contains("S3CRET"),
            "{err}"
        );
    }
}
