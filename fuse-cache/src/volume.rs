//! What a CSI volume carries from the controller to the node: the dataset's mounts and cache
//! settings in the volume context, and credentials in the CSI secrets (never in the context).

use std::collections::{BTreeMap, HashMap};

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

#[derive(Clone, Debug, Default, PartialEq)]
pub struct VolumeContext {
    pub dataset: Option<String>,
    pub mounts: Vec<MountSpec>,
    pub tiers: Vec<String>,
    pub block_size: Option<String>,
    pub sub_path: Option<String>,
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
        };
        vc.validate()?;
        Ok(vc)
    }

    /// The mounts with credentials from CSI secrets added: a key `OPTION` applies to every
    /// mount, `MOUNTNAME/OPTION` to one.
    pub fn mounts_with_secrets(&self, secrets: &HashMap<String, String>) -> Vec<MountSpec> {
        let mut mounts = self.mounts.clone();
        for (key, value) in secrets {
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
        mounts
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
        }
    }

    #[test]
    fn round_trips_through_the_context_map() {
        let map: HashMap<String, String> = ctx().to_map().into_iter().collect();
        assert_eq!(VolumeContext::from_map(&map).unwrap(), ctx());
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
        let m = c.mounts_with_secrets(&secrets);
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
    }
}
