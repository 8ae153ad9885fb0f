//! The Dataset catalogue of `--datasets FILE`: Fluid Dataset objects read from a YAML stream,
//! for running without Kubernetes. Every Dataset is checked when the file is loaded, so a bad
//! one stops the controller at start with the document and field named, not a pod at mount.
//!
//! Accepted per document (or per `items[]` entry of a `kind: List`):
//!
//! ```yaml
//! apiVersion: data.fluid.io/v1alpha1
//! kind: Dataset
//! metadata: {name: imagenet, namespace: ml}     # namespace defaults to "default"
//! spec:
//!   mounts:                                      # Fluid's spec.mounts[]
//!     - mountPoint: s3://imagenet/train
//!       name: train
//!       options: {endpoint: "http://127.0.0.1:8333"}
//!   sharedOptions: {region: us-east-1}           # Fluid: options for every mount
//!   tiers: ["mem:2GiB", "ssd:/var/cache/fluid:100GiB"]   # ours: fluid-fuse --tier specs
//!   blockSize: 4MiB                              # ours: cache block size
//! ```
//!
//! `spec.placement` (Exclusive or Shared) is Fluid's. Other `spec` fields of Fluid (runtimes,
//! nodeAffinity, ...) are ignored. Secret
//! option values are refused (they would travel in the volume context); Fluid's
//! `encryptOptions`/`sharedEncryptOptions` are Secret references that only Kubernetes can
//! resolve, so they are dropped with a warning: credentials reach the node as CSI node-stage
//! secrets.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fluid_volume::context::{CleanPolicy, VolumeContext};
use fluid_volume::dataset::MountSpec;
use fluid_volume::options::is_secret;
use fluid_volume::size::BlockSize;
use fluid_volume::tier::{TierSpec, Tiers};
use serde_yaml::Value;

use crate::crd;
use crate::error::{Error, Result};

pub const API_VERSION: &str = "data.fluid.io/v1alpha1";
pub const KIND: &str = "Dataset";
pub const DEFAULT_NAMESPACE: &str = "default";

/// One Dataset of the catalogue, checked and ready to put in a volume context.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    pub namespace: String,
    pub name: String,
    /// `spec.mounts[]` with `spec.sharedOptions` merged in and encrypt options removed.
    pub mounts: Vec<MountSpec>,
    /// Absent: the node's default tiers.
    pub tiers: Option<Tiers>,
    pub block_size: Option<BlockSize>,
    /// Fluid's `placement: Exclusive`: no other Dataset's cache on its nodes.
    pub exclusive: bool,
    /// When nodes stop its daemons: the CacheRuntime's `fuse.cleanPolicy` (a catalogue file
    /// has no runtime: OnDemand).
    pub clean_policy: CleanPolicy,
}

impl Dataset {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The volume context of this Dataset (no sub path).
    pub fn volume_context(&self) -> VolumeContext {
        VolumeContext {
            dataset: Some(self.key()),
            mounts: self.mounts.clone(),
            tiers: self.tiers.clone(),
            block_size: self.block_size,
            sub_path: None,
            exclusive: self.exclusive,
            clean_policy: self.clean_policy,
        }
    }

    /// A Dataset object of the API server with the tiers and block size of its CacheRuntime,
    /// checked as a catalogue entry is. Encrypt options are left out: they are Secret
    /// references, which the reconciler turns into node-stage secrets.
    pub fn from_resource(
        ds: &crd::Dataset,
        runtime: Option<&crd::CacheRuntimeSpec>,
    ) -> Result<Dataset> {
        let namespace = ds
            .metadata
            .namespace
            .as_deref()
            .unwrap_or(DEFAULT_NAMESPACE);
        let name = ds.metadata.name.as_deref().unwrap_or_default();
        let key = format!("{namespace}/{name}");
        let err =
            |field: &str, message: String| Error::dataset(&key, format!("{field}: {message}"));
        if let Some(k) = ds.spec.shared_options.keys().find(|k| is_secret(k)) {
            return Err(err(&format!("spec.sharedOptions.{k}"), secret_message()));
        }
        let mut mounts = Vec::with_capacity(ds.spec.mounts.len());
        for (i, m) in ds.spec.mounts.iter().enumerate() {
            let mut m = MountSpec::from(m.clone());
            m.encrypt_options = None;
            if let Some(k) = m.options.keys().find(|k| is_secret(k)) {
                return Err(err(
                    &format!("spec.mounts[{i}].options.{k}"),
                    secret_message(),
                ));
            }
            for (k, v) in &ds.spec.shared_options {
                m.options.entry(k.clone()).or_insert_with(|| v.clone());
            }
            mounts.push(m);
        }
        fluid_volume::dataset::resolve(mounts.clone(), "spec.mounts")
            .map_err(|e| Error::dataset(&key, e.to_string()))?;
        let tiers = runtime
            .map(|r| r.tier_specs())
            .transpose()
            .map_err(|(field, message)| err(&format!("CacheRuntime {field}"), message))?
            .filter(|t| !t.is_empty());
        let block_size = runtime
            .and_then(|r| r.block_size.as_deref())
            .map(|bs| BlockSize::parse(bs, "CacheRuntime spec.blockSize"))
            .transpose()
            .map_err(|e| Error::dataset(&key, e.to_string()))?;
        let dataset = Dataset {
            namespace: namespace.to_string(),
            name: name.to_string(),
            mounts,
            tiers,
            block_size,
            exclusive: ds.spec.placement == crd::Placement::Exclusive,
            clean_policy: runtime.map_or(CleanPolicy::OnDemand, |r| match r.fuse.clean_policy {
                crd::CleanPolicy::OnDemand => CleanPolicy::OnDemand,
                crd::CleanPolicy::OnRuntimeDeleted => CleanPolicy::OnRuntimeDeleted,
            }),
        };
        dataset
            .volume_context()
            .validate()
            .map_err(|e| err("spec", e.to_string()))?;
        Ok(dataset)
    }
}

#[derive(Clone, Debug, Default)]
pub struct Catalogue {
    datasets: BTreeMap<(String, String), Dataset>,
}

impl Catalogue {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Catalogue> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Catalogue {
            file: path.to_path_buf(),
            location: "reading".into(),
            message: e.to_string(),
        })?;
        Catalogue::parse(&text, path)
    }

    /// Parses a YAML stream; `file` names it in errors.
    pub fn parse(text: &str, file: &Path) -> Result<Catalogue> {
        let mut catalogue = Catalogue::default();
        for (i, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let at = format!("document {}", i + 1);
            let value = <Value as serde::Deserialize>::deserialize(document)
                .map_err(|e| catalogue_error(file, &at, e.to_string()))?;
            if value.is_null() {
                continue; // an empty document, e.g. after a trailing `---`
            }
            let is_list = value
                .get("kind")
                .and_then(Value::as_str)
                .is_some_and(|k| k.ends_with("List"));
            if is_list {
                let items = value
                    .get("items")
                    .and_then(Value::as_sequence)
                    .ok_or_else(|| {
                        catalogue_error(
                            file,
                            &format!("{at} items"),
                            "a List needs an items: sequence",
                        )
                    })?;
                for (j, item) in items.iter().enumerate() {
                    catalogue.add(file, &format!("{at} items[{j}]"), item)?;
                }
            } else {
                catalogue.add(file, &at, &value)?;
            }
        }
        Ok(catalogue)
    }

    fn add(&mut self, file: &Path, at: &str, value: &Value) -> Result<()> {
        let dataset = parse_dataset(value).map_err(|(location, message)| {
            let location = if location.is_empty() {
                at.to_string()
            } else {
                format!("{at} {location}")
            };
            Error::Catalogue {
                file: file.to_path_buf(),
                location,
                message,
            }
        })?;
        let key = (dataset.namespace.clone(), dataset.name.clone());
        if self.datasets.contains_key(&key) {
            return Err(catalogue_error(
                file,
                &format!("{at} ({}) metadata.name", dataset.key()),
                "a Dataset of this name is already defined in this namespace",
            ));
        }
        self.datasets.insert(key, dataset);
        Ok(())
    }

    /// The Dataset `name` in `namespace`, and only there.
    /// Adds (or replaces) one Dataset.
    pub fn insert(&mut self, ds: Dataset) {
        self.datasets
            .insert((ds.namespace.clone(), ds.name.clone()), ds);
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<&Dataset> {
        self.datasets
            .get(&(namespace.to_string(), name.to_string()))
    }

    pub fn len(&self) -> usize {
        self.datasets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.datasets.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Dataset> {
        self.datasets.values()
    }
}

fn catalogue_error(file: &Path, location: &str, message: impl Into<String>) -> Error {
    Error::Catalogue {
        file: PathBuf::from(file),
        location: location.to_string(),
        message: message.into(),
    }
}

/// An error inside one object: (`(ns/name) field`, message).
type ObjError = (String, String);

fn parse_dataset(value: &Value) -> std::result::Result<Dataset, ObjError> {
    let top = |field: &str, message: String| (field.to_string(), message);
    if !value.is_mapping() {
        return Err(top("", "expected a Dataset object (a mapping)".into()));
    }
    match value.get("apiVersion").and_then(Value::as_str) {
        Some(API_VERSION) => {}
        other => {
            return Err(top(
                "apiVersion",
                format!("{other:?}: expected {API_VERSION:?}"),
            ));
        }
    }
    match value.get("kind").and_then(Value::as_str) {
        Some(KIND) => {}
        other => return Err(top("kind", format!("{other:?}: expected {KIND:?}"))),
    }
    let metadata = value
        .get("metadata")
        .filter(|m| m.is_mapping())
        .ok_or_else(|| {
            top(
                "metadata",
                "missing (a mapping with name and namespace)".into(),
            )
        })?;
    let name = metadata
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| top("metadata.name", "missing".into()))?;
    check_name(name).map_err(|m| top("metadata.name", m))?;
    let namespace = match metadata.get("namespace") {
        None | Some(Value::Null) => DEFAULT_NAMESPACE,
        Some(v) => v
            .as_str()
            .ok_or_else(|| top("metadata.namespace", "expected a string".into()))?,
    };
    check_namespace(namespace).map_err(|m| top("metadata.namespace", m))?;

    // From here on errors carry the Dataset's name.
    let key = format!("{namespace}/{name}");
    let err = |field: &str, message: String| {
        let location = if field.is_empty() {
            format!("({key})")
        } else {
            format!("({key}) {field}")
        };
        (location, message)
    };

    let spec = value
        .get("spec")
        .filter(|s| s.is_mapping())
        .ok_or_else(|| err("spec", "missing (a mapping with mounts)".into()))?;
    let raw_mounts = spec
        .get("mounts")
        .and_then(Value::as_sequence)
        .ok_or_else(|| err("spec.mounts", "missing (a list of mounts)".into()))?;

    let shared = match spec.get("sharedOptions") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(v) => string_map(v).map_err(|m| err("spec.sharedOptions", m))?,
    };
    if let Some(k) = shared.keys().find(|k| is_secret(k)) {
        return Err(err(&format!("spec.sharedOptions.{k}"), secret_message()));
    }
    if spec
        .get("sharedEncryptOptions")
        .is_some_and(|v| !v.is_null())
    {
        tracing::warn!(
            dataset = %key,
            "spec.sharedEncryptOptions ignored: Secret references are not resolved without Kubernetes; pass credentials as CSI node-stage secrets"
        );
    }

    let mut mounts = Vec::with_capacity(raw_mounts.len());
    for (i, raw) in raw_mounts.iter().enumerate() {
        let field = format!("spec.mounts[{i}]");
        let mut m: MountSpec =
            serde_yaml::from_value(raw.clone()).map_err(|e| err(&field, e.to_string()))?;
        if let Some(k) = m.options.keys().find(|k| is_secret(k)) {
            return Err(err(&format!("{field}.options.{k}"), secret_message()));
        }
        for (k, v) in &shared {
            m.options.entry(k.clone()).or_insert_with(|| v.clone());
        }
        if m.encrypt_options.take().is_some_and(|v| !v.is_null()) {
            tracing::warn!(
                dataset = %key,
                mount = %m.name,
                "encryptOptions ignored: Secret references are not resolved without Kubernetes; pass credentials as CSI node-stage secrets"
            );
        }
        mounts.push(m);
    }

    // Checked here first for errors that name spec.mounts (the volume context calls them mounts).
    fluid_volume::dataset::resolve(mounts.clone(), "spec.mounts")
        .map_err(|e| err("", e.to_string()))?;

    let tiers = match spec.get("tiers") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let seq = v.as_sequence().ok_or_else(|| {
                err(
                    "spec.tiers",
                    "expected a list of tier specs such as \"mem:2GiB\"".into(),
                )
            })?;
            let mut tiers = Vec::with_capacity(seq.len());
            for (i, t) in seq.iter().enumerate() {
                let field = format!("spec.tiers[{i}]");
                let t = t
                    .as_str()
                    .ok_or_else(|| err(&field, "expected a string such as \"mem:2GiB\"".into()))?;
                if t.contains(';') {
                    return Err(err(&field, "must not contain ';'".into()));
                }
                tiers.push(TierSpec::parse(t).map_err(|e| err(&field, e.to_string()))?);
            }
            Some(Tiers::new(tiers).map_err(|e| err("spec.tiers", e.to_string()))?)
        }
    };
    let block_size = match spec.get("blockSize") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let s = scalar_string(v)
                .ok_or_else(|| err("spec.blockSize", "expected a size such as \"4MiB\"".into()))?;
            Some(BlockSize::parse(&s, "spec.blockSize").map_err(|e| err("", e.to_string()))?)
        }
    };

    let exclusive = match spec.get("placement") {
        None | Some(Value::Null) => false,
        Some(v) => match v.as_str() {
            Some("Exclusive") => true,
            Some("Shared") => false,
            _ => {
                return Err(err("spec.placement", "expected Exclusive or Shared".into()));
            }
        },
    };
    let dataset = Dataset {
        namespace: namespace.to_string(),
        name: name.to_string(),
        mounts,
        tiers,
        block_size,
        exclusive,
        clean_policy: CleanPolicy::OnDemand,
    };
    // The node reads the volume context with the same checks; run them once here too.
    dataset
        .volume_context()
        .validate()
        .map_err(|e| err("spec", e.to_string()))?;
    Ok(dataset)
}

fn secret_message() -> String {
    "secret values must not be in the catalogue (they would travel in the volume context); pass them as CSI node-stage secrets".into()
}

fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn string_map(v: &Value) -> std::result::Result<BTreeMap<String, String>, String> {
    let map = v
        .as_mapping()
        .ok_or("expected a mapping of option names to values")?;
    let mut out = BTreeMap::new();
    for (k, v) in map {
        let k = k.as_str().ok_or("option names are strings")?;
        let v = scalar_string(v).ok_or_else(|| format!("{k}: expected a string value"))?;
        out.insert(k.to_string(), v);
    }
    Ok(out)
}

/// A Kubernetes object name (DNS-1123 subdomain): what `metadata.name` and the `dataset`
/// parameter may hold.
pub fn check_name(name: &str) -> std::result::Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a Kubernetes object name (lowercase letters, digits, '-' and '.', alphanumeric at both ends, at most 253)"
        ))
    }
}

/// A Kubernetes namespace name (DNS-1123 label).
pub fn check_namespace(ns: &str) -> std::result::Result<(), String> {
    let ok = !ns.is_empty()
        && ns.len() <= 63
        && ns
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && ns.starts_with(|c: char| c.is_ascii_alphanumeric())
        && ns.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{ns:?} is not a namespace name (lowercase letters, digits and '-', alphanumeric at both ends, at most 63)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Catalogue> {
        Catalogue::parse(text, Path::new("datasets.yaml"))
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    const TWO: &str = r#"
apiVersion: data.fluid.io/v1alpha1
kind: Dataset
metadata: {name: imagenet, namespace: ml}
spec:
  mounts:
    - mountPoint: s3://imagenet/train
      name: train
      options: {endpoint: "http://127.0.0.1:8333"}
      encryptOptions:
        - name: secret-key
          valueFrom: {secretKeyRef: {name: s3, key: sk}}
    - mountPoint: local:///tmp
      name: scratch
      readOnly: true
  sharedOptions: {region: us-east-1, endpoint: "http://ignored"}
  tiers: ["mem:1GiB", "ssd:/var/cache/fluid:10GiB,high=0.9,low=0.5"]
  blockSize: 8MiB
  runtimes: [{name: imagenet, namespace: ml}]
---
apiVersion: data.fluid.io/v1alpha1
kind: Dataset
metadata: {name: other}
spec:
  mounts: [{mountPoint: "local:///tmp", name: data}]
---
"#;

    #[test]
    fn reads_a_stream_of_datasets() {
        let c = parse(TWO).unwrap();
        assert_eq!(c.len(), 2);
        let d = c.get("ml", "imagenet").unwrap();
        assert_eq!(d.key(), "ml/imagenet");
        assert_eq!(d.mounts.len(), 2);
        assert_eq!(
            d.mounts[0].options.get("endpoint").map(String::as_str),
            Some("http://127.0.0.1:8333")
        );
        assert_eq!(
            d.mounts[0].options.get("region").map(String::as_str),
            Some("us-east-1")
        );
        assert_eq!(
            d.mounts[0].encrypt_options, None,
            "Secret references are dropped"
        );
        assert!(d.mounts[1].read_only);
        assert_eq!(d.tiers.as_ref().map(|t| t.specs().len()), Some(2));
        assert_eq!(d.block_size.map(|b| b.to_string()).as_deref(), Some("8MiB"));
        // Resolved only in its own namespace.
        assert!(c.get("default", "imagenet").is_none());
        assert!(c.get("default", "other").is_some());
        assert!(c.get("ml", "other").is_none());
    }

    #[test]
    fn reads_a_list() {
        let list = r#"
apiVersion: v1
kind: List
items:
  - {apiVersion: data.fluid.io/v1alpha1, kind: Dataset, metadata: {name: a, namespace: x}, spec: {mounts: [{mountPoint: "s3://a", name: a}]}}
  - {apiVersion: data.fluid.io/v1alpha1, kind: Dataset, metadata: {name: b, namespace: x}, spec: {mounts: [{mountPoint: "hdfs://h:9820/p", name: b}]}}
"#;
        let c = parse(list).unwrap();
        assert_eq!(
            c.iter().map(Dataset::key).collect::<Vec<_>>(),
            ["x/a", "x/b"]
        );
        assert!(parse("").unwrap().is_empty());
    }

    #[test]
    fn errors_name_the_document_and_field() {
        let doc = |spec: &str| {
            format!(
                "apiVersion: data.fluid.io/v1alpha1\nkind: Dataset\nmetadata: {{name: a, namespace: ns}}\nspec: {spec}\n"
            )
        };
        let second = |spec: &str| {
            format!(
                "{}---\n{}",
                doc("{mounts: [{mountPoint: 'local:///tmp', name: ok}]}")
                    .replace("name: a,", "name: z,"),
                doc(spec)
            )
        };
        let e = err(&second("{mounts: [{mountPoint: 'ftp://x', name: a}]}"));
        assert!(
            e.contains("datasets.yaml")
                && e.contains("document 2 (ns/a)")
                && e.contains("spec.mounts[0].mountPoint"),
            "{e}"
        );
        let e = err(&doc(
            "{mounts: [{mountPoint: 's3://b', name: a, options: {secret-key: x}}]}",
        ));
        assert!(e.contains("spec.mounts[0].options.secret-key"), "{e}");
        let e = err(&doc(
            "{mounts: [{mountPoint: 's3://b', name: a, bogus: 1}]}",
        ));
        assert!(e.contains("spec.mounts[0]") && e.contains("bogus"), "{e}");
        let e = err(&doc(
            "{mounts: [{mountPoint: 's3://b', name: a}], tiers: ['mem:lots']}",
        ));
        assert!(e.contains("spec.tiers[0]"), "{e}");
        let e = err(&doc(
            "{mounts: [{mountPoint: 's3://b', name: a}], blockSize: 4Mx}",
        ));
        assert!(e.contains("spec.blockSize"), "{e}");
        let e = err(&doc(
            "{mounts: [{mountPoint: 's3://b', name: a}], sharedOptions: {password: x}}",
        ));
        assert!(e.contains("spec.sharedOptions.password"), "{e}");
        let e = err(&doc("{}"));
        assert!(e.contains("spec.mounts"), "{e}");
        let e = err(&doc("{mounts: []}"));
        assert!(e.contains("spec.mounts"), "{e}");
        let e =
            err(&doc("{mounts: [{mountPoint: 's3://b', name: a}]}").replace("Dataset", "DataLoad"));
        assert!(e.contains("document 1 kind"), "{e}");
        let e = err(&doc("{mounts: [{mountPoint: 's3://b', name: a}]}").replace("v1alpha1", "v2"));
        assert!(e.contains("apiVersion"), "{e}");
        let e =
            err(&doc("{mounts: [{mountPoint: 's3://b', name: a}]}")
                .replace("name: a,", "name: A_B,"));
        assert!(e.contains("metadata.name"), "{e}");
        let e = err(&doc("{mounts: [{mountPoint: 's3://b', name: a}]}")
            .replace("namespace: ns", "namespace: 'x/y'"));
        assert!(e.contains("metadata.namespace"), "{e}");
        let dup = doc("{mounts: [{mountPoint: 's3://b', name: a}]}");
        let e = err(&format!("{dup}---\n{dup}"));
        assert!(
            e.contains("document 2 (ns/a) metadata.name") && e.contains("already defined"),
            "{e}"
        );
        let e = err("a: [unclosed");
        assert!(e.contains("document 1"), "{e}");
        let e = err("kind: List\nitems: [{kind: Dataset}]");
        assert!(e.contains("document 1 items[0] apiVersion"), "{e}");
    }

    #[test]
    fn names() {
        assert!(check_name("imagenet-1k.v2").is_ok());
        for bad in ["", "A", "a/b", "-a", "a-", "a_b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_namespace("team-b").is_ok());
        assert!(check_namespace("a.b").is_err());
    }
}
