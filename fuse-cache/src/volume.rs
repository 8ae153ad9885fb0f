//! What a CSI volume carries from the controller to the node: the dataset's mounts and cache
//! settings in the volume context, and credentials in the CSI secrets (never in the context).

use std::collections::{BTreeMap, HashMap};

use sha2::{Digest, Sha256};

use crate::cache::{TierSpec, parse_size};
use crate::dataset::{self, Mount, MountSpec};
use crate::error::{Error, Result};
use crate::mountpoint::is_secret_option;

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

/// Node annotation the node plugin writes: `HOST:PORT` of its `fluid.v1.CacheNode` endpoint
/// (plain gRPC), where the controller asks for a Dataset's cache figures, warm-up and eviction.
pub const CACHE_ENDPOINT_ANNOTATION: &str = "fluid.io/cache-endpoint";
/// Every node label key made by [`dataset_label_key`] starts with this.
pub const DATASET_LABEL_PREFIX: &str = "fluid.io/s-";
/// The value of a dataset label while the node holds cache for the Dataset.
pub const DATASET_LABEL_VALUE: &str = "true";
/// Longest name part of a label key (the part after `prefix/`).
const MAX_LABEL_NAME: usize = 63;
/// Hex digits of sha256 in a shortened label key.
const LABEL_HASH_HEX: usize = 8;

/// `(namespace, name)` of a Dataset written `namespace/name` (as in the volume context's
/// [`DATASET`]); `None` unless both parts are non-empty and there is exactly one `/`.
pub fn parse_dataset(s: &str) -> Option<(&str, &str)> {
    let (namespace, name) = s.split_once('/')?;
    (!namespace.is_empty() && !name.is_empty() && !name.contains('/')).then_some((namespace, name))
}

/// The node label key that says a node holds cache for a Dataset: `fluid.io/s-<namespace>-<name>`,
/// Fluid's own convention (the scheduler and the admission webhook prefer nodes with it).
///
/// A label name (after `fluid.io/`) has at most 63 characters. A longer one keeps its first 54
/// characters (less trailing `-`, `.`, `_`) and ends with `-` and the first 8 hex digits of
/// sha256(`<namespace>/<name>`), so it stays within the limit, ends alphanumeric and still tells
/// Datasets apart. The short form is ambiguous when names hold `-` (`a-b/c` and `a/b-c`), as
/// it is upstream; keep it for compatibility. Namespace and name are Kubernetes object names,
/// so every character is valid in a label name.
pub fn dataset_label_key(namespace: &str, name: &str) -> String {
    format!(
        "fluid.io/{}",
        fit_label(format!("s-{namespace}-{name}"), namespace, name)
    )
}

/// Node label set while the node serves a Dataset with `placement: Exclusive` (Fluid's
/// `fluid_exclusive`); its value is [`exclusive_label_value`]. Pods of other Datasets are kept
/// off such nodes (webhook) and their volumes are refused there (node plugin).
pub const EXCLUSIVE_LABEL: &str = "fluid_exclusive";

/// The value of [`EXCLUSIVE_LABEL`]: `<namespace>_<name>` (Fluid's), shortened with a hash
/// like [`dataset_label_key`] when it would pass 63 characters.
pub fn exclusive_label_value(namespace: &str, name: &str) -> String {
    fit_label(format!("{namespace}_{name}"), namespace, name)
}

/// `label` if it is short enough for a label name (or value), else its head and a hash of
/// `<namespace>/<name>`.
fn fit_label(label: String, namespace: &str, name: &str) -> String {
    if label.len() <= MAX_LABEL_NAME {
        return label;
    }
    let digest = Sha256::digest(format!("{namespace}/{name}").as_bytes());
    let hash: String = digest
        .iter()
        .take(LABEL_HASH_HEX / 2)
        .map(|b| format!("{b:02x}"))
        .collect();
    let keep = MAX_LABEL_NAME - 1 - LABEL_HASH_HEX;
    // Object names are ASCII; the boundary search only keeps odd input from panicking.
    let cut = (0..=keep)
        .rev()
        .find(|&i| label.is_char_boundary(i))
        .unwrap_or(0);
    let head = label[..cut].trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    format!("{head}-{hash}")
}

/// Whether `s` is a valid label name (the part of a key after `prefix/`): at most 63
/// characters of `[-A-Za-z0-9_.]`, alphanumeric at both ends.
pub fn is_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    let (Some(first), Some(last)) = (b.first(), b.last()) else {
        return false;
    };
    b.len() <= MAX_LABEL_NAME
        && first.is_ascii_alphanumeric()
        && last.is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
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
    pub tiers: Vec<String>,
    pub block_size: Option<String>,
    pub sub_path: Option<String>,
    /// No other Dataset's cache may share a node with this one.
    pub exclusive: bool,
    pub clean_policy: CleanPolicy,
}

impl VolumeContext {
    /// Validates every field so a bad volume fails at CreateVolume, not at mount time.
    pub fn validate(&self) -> Result<Vec<Mount>> {
        for (i, m) in self.mounts.iter().enumerate() {
            if let Some(k) = m.options.keys().find(|k| is_secret_option(k)) {
                return Err(Error::invalid(
                    format!("mounts[{i}].options.{k}"),
                    "secret values go in CSI secrets or encryptOptions, not in the volume context",
                ));
            }
        }
        for t in &self.tiers {
            TierSpec::parse(t)?;
        }
        if let Some(bs) = &self.block_size {
            parse_size(bs).map_err(|e| Error::invalid(BLOCK_SIZE, e.to_string()))?;
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
        if !self.tiers.is_empty() {
            m.insert(TIERS.to_string(), self.tiers.join(";"));
        }
        if let Some(bs) = &self.block_size {
            m.insert(BLOCK_SIZE.to_string(), bs.clone());
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
                .map(|t| {
                    t.split(';')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
            block_size: ctx.get(BLOCK_SIZE).cloned(),
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
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    #[derive(serde::Serialize)]
    struct Doc<'a> {
        mounts: &'a [MountSpec],
    }
    let text = serde_yaml::to_string(&Doc { mounts })
        .map_err(|e| Error::invalid("mounts", e.to_string()))?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
    f.write_all(text.as_bytes())
        .map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(format!("renaming to {}", path.display()), e))
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
            tiers: vec![
                "mem:1GiB".into(),
                "ssd:/var/cache/fluid:10GiB,high=0.9,low=0.5".into(),
            ],
            block_size: Some("4MiB".into()),
            sub_path: None,
            exclusive: true,
            clean_policy: CleanPolicy::OnDemand,
        }
    }

    fn label_name(key: &str) -> &str {
        key.strip_prefix("fluid.io/").unwrap()
    }

    #[test]
    fn dataset_label_keys() {
        assert_eq!(
            dataset_label_key("default", "imagenet"),
            "fluid.io/s-default-imagenet"
        );
        assert!(dataset_label_key("default", "imagenet").starts_with(DATASET_LABEL_PREFIX));

        // Exactly 63 characters after the prefix: kept as is. One more: shortened to 63.
        let name63 = "n".repeat(63 - "s-ns-".len());
        let key = dataset_label_key("ns", &name63);
        assert_eq!(key, format!("fluid.io/s-ns-{name63}"));
        assert_eq!(label_name(&key).len(), 63);
        let name64 = format!("{name63}x");
        let key = dataset_label_key("ns", &name64);
        assert_eq!(label_name(&key).len(), 63, "{key}");
        assert_ne!(key, format!("fluid.io/s-ns-{name64}"));

        // Long names: the first 8 hex digits of sha256("ns/name") at the end.
        let (ns, name) = ("a".repeat(63), "b".repeat(253));
        let key = dataset_label_key(&ns, &name);
        let hash = Sha256::digest(format!("{ns}/{name}").as_bytes());
        let hex = format!(
            "{:02x}{:02x}{:02x}{:02x}",
            hash[0], hash[1], hash[2], hash[3]
        );
        assert_eq!(key, format!("fluid.io/s-{}-{hex}", &ns[..52]));
        assert!(key.starts_with(DATASET_LABEL_PREFIX));

        // Deterministic, and distinct for names that share the kept prefix.
        assert_eq!(dataset_label_key(&ns, &name), key);
        assert_ne!(dataset_label_key(&ns, &format!("{name}c")), key);
        assert_ne!(dataset_label_key("x", &name), dataset_label_key("y", &name));

        // Valid whatever the cut lands on (a '-' or '.' just before the hash is dropped).
        for (ns, name) in [
            ("default".to_string(), "imagenet".to_string()),
            ("ns".to_string(), name63.clone()),
            ("ns".to_string(), name64.clone()),
            (ns.clone(), name.clone()),
            (
                "kube-system".into(),
                format!("{}-.-{}", "d".repeat(40), "e".repeat(40)),
            ),
            ("x".into(), format!("{}.{}", "a".repeat(49), "z".repeat(30))),
            ("x".into(), format!("{}-{}", "a".repeat(50), "z".repeat(30))),
        ] {
            let key = dataset_label_key(&ns, &name);
            assert!(is_label_name(label_name(&key)), "{ns}/{name} -> {key}");
        }
        assert!(
            !dataset_label_key("x", &format!("{}-{}", "a".repeat(50), "z".repeat(30)))
                .contains("--")
        );
    }

    #[test]
    fn label_names_and_dataset_names() {
        for good in ["a", "s-default-x", "A_b.c-9", &"z".repeat(63)] {
            assert!(is_label_name(good), "{good}");
        }
        for bad in ["", "-a", "a-", "a/b", "a b", &"z".repeat(64), "ä"] {
            assert!(!is_label_name(bad), "{bad}");
        }
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
    fn placement_and_exclusive_label() {
        let mut map: HashMap<String, String> = ctx().to_map().into_iter().collect();
        assert_eq!(map.get(PLACEMENT).map(String::as_str), Some(EXCLUSIVE));
        map.insert(PLACEMENT.into(), "Shared".into());
        assert!(!VolumeContext::from_map(&map).unwrap().exclusive);
        map.insert(PLACEMENT.into(), "Sometimes".into());
        let err = VolumeContext::from_map(&map).unwrap_err().to_string();
        assert!(err.contains(PLACEMENT), "{err}");
        assert_eq!(exclusive_label_value("ml", "imagenet"), "ml_imagenet");
        let long = exclusive_label_value(&"n".repeat(40), &"d".repeat(40));
        assert!(is_label_name(&long) && long.len() <= 63, "{long}");
        assert_ne!(
            long,
            exclusive_label_value(&"n".repeat(40), &"d".repeat(41))
        );
    }

    #[test]
    fn refuses_secrets_and_bad_fields() {
        let mut c = ctx();
        c.mounts[0].options.insert("secret-key".into(), "x".into());
        assert!(c.validate().unwrap_err().to_string().contains("secret-key"));
        let mut c = ctx();
        c.tiers = vec!["mem:lots".into()];
        assert!(c.validate().is_err());
        for bad in ["/abs", "../up", "a/../../b", "./x"] {
            assert!(check_sub_path(bad).is_err(), "{bad}");
        }
        assert!(check_sub_path("a/b c").is_ok());
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
