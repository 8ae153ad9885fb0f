//! The mounts of a dataset, read from YAML with Fluid's field names (`Dataset.spec.mounts[]`)
//! or from repeated `--mount URL` flags.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::mountpoint::MountPoint;
use crate::options::redacted;

/// One entry of `spec.mounts[]`, as Fluid writes it. Its Debug output hides secret options.
#[derive(Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MountSpec {
    pub mount_point: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// Fluid's secret references are resolved by the controller before they reach us.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypt_options: Option<serde_yaml::Value>,
}

impl std::fmt::Debug for MountSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MountSpec")
            .field("mount_point", &self.mount_point)
            .field("name", &self.name)
            .field("path", &self.path)
            .field("options", &redacted(&self.options))
            .field("read_only", &self.read_only)
            .finish()
    }
}

/// A mount ready to serve: its parsed URL and where it sits in the tree.
#[derive(Clone, Debug)]
pub struct Mount {
    pub name: String,
    pub mount_point: MountPoint,
    /// Absolute path inside the dataset, `/` for the root.
    pub path: String,
    pub read_only: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DatasetDoc {
    #[serde(default)]
    spec: Option<SpecDoc>,
    #[serde(default)]
    mounts: Option<Vec<MountSpec>>,
}

#[derive(Deserialize)]
struct SpecDoc {
    mounts: Vec<MountSpec>,
}

/// Reads a Dataset YAML file: a whole Dataset object, or a document with a top-level `mounts:`.
/// The list is not checked yet: the caller may add options before [`resolve`].
pub fn load_file(path: &Path) -> Result<Vec<MountSpec>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("reading dataset {}", path.display()), e))?;
    parse_yaml(&text, &path.display().to_string())
}

pub fn parse_yaml(text: &str, origin: &str) -> Result<Vec<MountSpec>> {
    let doc: DatasetDoc =
        serde_yaml::from_str(text).map_err(|e| Error::invalid(origin, e.to_string()))?;
    doc.spec
        .map(|s| s.mounts)
        .or(doc.mounts)
        .ok_or_else(|| Error::invalid(origin, "no spec.mounts (or mounts) list"))
}

/// Mounts from `--mount URL` flags: each named after its position, one alone sits at `/`.
pub fn from_urls(urls: &[String]) -> Vec<MountSpec> {
    let single = urls.len() == 1;
    urls.iter()
        .enumerate()
        .map(|(i, url)| MountSpec {
            mount_point: url.clone(),
            name: format!("m{i}"),
            path: single.then(|| "/".to_string()),
            ..Default::default()
        })
        .collect()
}

/// Validates the list: parses URLs, applies Fluid's default path `/<name>`, refuses
/// duplicates and mounts nested inside each other.
pub fn resolve(specs: Vec<MountSpec>, field: &str) -> Result<Vec<Mount>> {
    if specs.is_empty() {
        return Err(Error::invalid(field, "a dataset needs at least one mount"));
    }
    let mut mounts: Vec<Mount> = Vec::with_capacity(specs.len());
    for (i, spec) in specs.into_iter().enumerate() {
        let f = format!("{field}[{i}]");
        let mount_point =
            MountPoint::parse(&spec.mount_point, spec.options, &format!("{f}.mountPoint"))?;
        if spec.name.is_empty() && spec.path.as_deref().is_none_or(str::is_empty) {
            return Err(Error::invalid(
                format!("{f}.name"),
                "a mount needs a name or a path",
            ));
        }
        if spec.name.contains('/') {
            return Err(Error::invalid(
                format!("{f}.name"),
                format!("{:?} must not contain '/'", spec.name),
            ));
        }
        let raw = spec
            .path
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| format!("/{}", spec.name));
        let path = normalize_mount_path(&raw).ok_or_else(|| {
            Error::invalid(
                format!("{f}.path"),
                format!("{raw:?}: an absolute path without '.' or '..' components"),
            )
        })?;
        if let Some(other) = mounts.iter().find(|m| overlaps(&m.path, &path)) {
            return Err(Error::invalid(
                format!("{f}.path"),
                format!("{path} overlaps mount {:?} at {}", other.name, other.path),
            ));
        }
        mounts.push(Mount {
            name: spec.name,
            mount_point,
            path,
            read_only: spec.read_only,
        });
    }
    Ok(mounts)
}

fn normalize_mount_path(p: &str) -> Option<String> {
    if !p.starts_with('/') {
        return None;
    }
    let parts: Vec<&str> = p.split('/').filter(|s| !s.is_empty()).collect();
    if parts.iter().any(|s| *s == "." || *s == "..") {
        return None;
    }
    Some(format!("/{}", parts.join("/")))
}

/// Two mount paths overlap when one is the other or an ancestor of it.
fn overlaps(a: &str, b: &str) -> bool {
    let under = |x: &str, y: &str| x == y || y == "/" || x.starts_with(&format!("{y}/"));
    under(a, b) || under(b, a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_fluid_dataset() {
        let yaml = r#"
apiVersion: data.fluid.io/v1alpha1
kind: Dataset
metadata: {name: imagenet, namespace: ml}
spec:
  mounts:
    - mountPoint: s3://imagenet/train
      name: train
      options: {endpoint: "http://127.0.0.1:8333", path-style: "true"}
    - mountPoint: hdfs://127.0.0.1:9820/labels
      name: labels
      path: /meta/labels
      readOnly: true
"#;
        let mounts = resolve(parse_yaml(yaml, "ds.yaml").unwrap(), "spec.mounts").unwrap();
        assert_eq!(mounts.len(), 2);
        assert_eq!(mounts[0].path, "/train");
        assert_eq!(mounts[1].path, "/meta/labels");
        assert!(mounts[1].read_only);
        assert_eq!(
            mounts[0].mount_point.option(&crate::options::s3::ENDPOINT),
            Some("http://127.0.0.1:8333")
        );
    }

    #[test]
    fn refuses_overlaps_and_bad_paths() {
        let spec = |path: &str| MountSpec {
            mount_point: "local:///tmp".into(),
            name: "x".into(),
            path: Some(path.into()),
            ..Default::default()
        };
        assert!(
            resolve(vec![spec("/"), spec("/a")], "m")
                .unwrap_err()
                .to_string()
                .contains("m[1].path")
        );
        assert!(resolve(vec![spec("/a"), spec("/a/b")], "m").is_err());
        assert!(resolve(vec![spec("/a"), spec("/ab")], "m").is_ok());
        assert!(
            resolve(vec![spec("rel")], "m")
                .unwrap_err()
                .to_string()
                .contains("m[0].path")
        );
        assert!(resolve(vec![spec("/a/../b")], "m").is_err());
        assert!(resolve(vec![], "m").is_err());
        let unknown = parse_yaml(
            "mounts: [{mountPoint: 'local:///x', name: a, bogus: 1}]",
            "f",
        )
        .unwrap_err();
        assert!(unknown.to_string().contains("bogus"), "{unknown}");
    }

    #[test]
    fn one_url_sits_at_root() {
        let one = resolve(from_urls(&["local:///tmp".into()]), "--mount").unwrap();
        assert_eq!(one[0].path, "/");
        let two = from_urls(&["local:///tmp".into(), "local:///var".into()]);
        let two = resolve(two, "--mount").unwrap();
        assert_eq!((two[0].path.as_str(), two[1].path.as_str()), ("/m0", "/m1"));
    }
}
