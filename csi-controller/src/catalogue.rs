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
//! A document's `spec` is read as the CRD's own `DatasetSpec` and converted by the same
//! [`Dataset::from_spec`] as a Dataset object of the API server, so a catalogue entry means
//! what the same Dataset means in a cluster; `tiers` and `blockSize` take the place of its
//! CacheRuntime. `spec.placement` (Exclusive or Shared) is Fluid's. Other `spec` fields of
//! Fluid (runtimes, ...) are ignored; an unknown field inside a mount is refused (a typo).
//! Secret option values are refused (they would travel in the volume context); Fluid's
//! `encryptOptions`/`sharedEncryptOptions` are Secret references that only Kubernetes can
//! resolve, so they are dropped with a warning: credentials reach the node as CSI node-stage
//! secrets.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fluid_volume::context::{CleanPolicy, VolumeContext};
use fluid_volume::dataset::MountSpec;
use fluid_volume::options::{is_credential, is_secret};
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

    /// A Dataset object of the API server with the settings of its CacheRuntime, through
    /// [`Dataset::from_spec`]. Encrypt options are left out: they are Secret references, which
    /// the reconciler turns into node-stage secrets.
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
        let refused = |(field, message): FieldError| {
            let message = if field.is_empty() {
                message
            } else {
                format!("{field}: {message}")
            };
            Error::dataset(format!("{namespace}/{name}"), message)
        };
        let cache = runtime
            .map(CacheSettings::from_runtime)
            .transpose()
            .map_err(refused)?
            .unwrap_or_default();
        Dataset::from_spec(namespace, name, &ds.spec, cache).map_err(refused)
    }

    /// The one conversion of a Dataset's spec, for objects of the API server and documents of
    /// the catalogue alike: shared options merged into each mount, encrypt options dropped
    /// (they never travel in a volume context), secret option values refused, and everything
    /// the node checks checked here.
    pub fn from_spec(
        namespace: &str,
        name: &str,
        spec: &crd::DatasetSpec,
        cache: CacheSettings,
    ) -> std::result::Result<Dataset, FieldError> {
        let refuse = |field: String| Err((field, secret_message()));
        if let Some(k) = spec.shared_options.keys().find(|k| is_secret(k)) {
            return refuse(format!("spec.sharedOptions.{k}"));
        }
        let encrypt_options =
            spec.shared_encrypt_options
                .iter()
                .enumerate()
                .map(|(j, o)| (format!("spec.sharedEncryptOptions[{j}].name"), o))
                .chain(spec.mounts.iter().enumerate().flat_map(|(i, m)| {
                    m.encrypt_options.iter().enumerate().map(move |(j, o)| {
                        (format!("spec.mounts[{i}].encryptOptions[{j}].name"), o)
                    })
                }));
        for (field, o) in encrypt_options {
            if !is_credential(&o.name) {
                return Err((
                    field,
                    format!(
                        "{:?} is not a credential: only credentials (access-key, secret-key, \
                         session-token, ...) take a value from a Secret, since any other option is \
                         sent in clear; set it in options",
                        o.name
                    ),
                ));
            }
        }
        let mut mounts = Vec::with_capacity(spec.mounts.len());
        for (i, m) in spec.mounts.iter().enumerate() {
            let mut m = MountSpec::from(m.clone());
            m.encrypt_options = None;
            if let Some(k) = m.options.keys().find(|k| is_secret(k)) {
                return refuse(format!("spec.mounts[{i}].options.{k}"));
            }
            for (k, v) in &spec.shared_options {
                m.options.entry(k.clone()).or_insert_with(|| v.clone());
            }
            mounts.push(m);
        }
        // Checked here first for errors that name spec.mounts (the volume context calls them
        // mounts).
        fluid_volume::dataset::resolve(mounts.clone(), "spec.mounts")
            .map_err(|e| (String::new(), e.to_string()))?;
        let dataset = Dataset {
            namespace: namespace.to_string(),
            name: name.to_string(),
            mounts,
            tiers: cache.tiers,
            block_size: cache.block_size,
            exclusive: spec.placement == crd::Placement::Exclusive,
            clean_policy: cache.clean_policy,
        };
        dataset
            .volume_context()
            .validate()
            .map_err(|e| ("spec".to_string(), e.to_string()))?;
        Ok(dataset)
    }
}

/// A refused field of a Dataset or its runtime: (where, why); an empty field when the message
/// names it.
pub type FieldError = (String, String);

/// How a Dataset is cached: from its CacheRuntime, or from a catalogue document's own
/// `tiers` and `blockSize`. Absent values are the node's defaults.
#[derive(Clone, Debug, Default)]
pub struct CacheSettings {
    pub tiers: Option<Tiers>,
    pub block_size: Option<BlockSize>,
    pub clean_policy: CleanPolicy,
}

impl CacheSettings {
    pub fn from_runtime(r: &crd::CacheRuntimeSpec) -> std::result::Result<Self, FieldError> {
        let tiers = r
            .tier_specs()
            .map_err(|(field, message)| (format!("CacheRuntime {field}"), message))?;
        let block_size = r
            .block_size
            .as_deref()
            .map(|bs| BlockSize::parse(bs, "CacheRuntime spec.blockSize"))
            .transpose()
            .map_err(|e| (String::new(), e.to_string()))?;
        Ok(CacheSettings {
            tiers: Some(tiers).filter(|t| !t.is_empty()),
            block_size,
            clean_policy: match r.fuse.clean_policy {
                crd::CleanPolicy::OnDemand => CleanPolicy::OnDemand,
                crd::CleanPolicy::OnRuntimeDeleted => CleanPolicy::OnRuntimeDeleted,
            },
        })
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

    let mut spec = value
        .get("spec")
        .filter(|s| s.is_mapping())
        .cloned()
        .ok_or_else(|| err("spec", "missing (a mapping with mounts)".into()))?;
    let cache = catalogue_cache_settings(&mut spec).map_err(|(f, m)| err(&f, m))?;
    if spec.get("mounts").and_then(Value::as_sequence).is_none() {
        return Err(err("spec.mounts", "missing (a list of mounts)".into()));
    }
    options_as_strings(&mut spec);
    // The CRD's own type, so a catalogue entry means what the same Dataset applied to the API
    // server means. Fields it does not know are Fluid's that we do not implement (ignored,
    // as the API server prunes them), except inside a mount, where they are typos.
    let mut ignored = Vec::new();
    let spec: crd::DatasetSpec =
        serde_ignored::deserialize(spec, |path| ignored.push(field_path(&path)))
            .map_err(|e| err("spec", e.to_string()))?;
    for path in ignored {
        if path.starts_with("mounts[") {
            return Err(err(
                &format!("spec.{path}"),
                "unknown field (known: mountPoint, name, path, options, readOnly, encryptOptions)"
                    .into(),
            ));
        }
        tracing::debug!(dataset = %key, "spec.{path} ignored: not a field this controller implements");
    }
    if !spec.shared_encrypt_options.is_empty() {
        tracing::warn!(
            dataset = %key,
            "spec.sharedEncryptOptions ignored: Secret references are not resolved without Kubernetes; pass credentials as CSI node-stage secrets"
        );
    }
    for m in spec.mounts.iter().filter(|m| !m.encrypt_options.is_empty()) {
        tracing::warn!(
            dataset = %key,
            mount = %m.name,
            "encryptOptions ignored: Secret references are not resolved without Kubernetes; pass credentials as CSI node-stage secrets"
        );
    }
    Dataset::from_spec(namespace, name, &spec, cache).map_err(|(f, m)| err(&f, m))
}

/// Takes a catalogue document's own `spec.tiers` (a list of `fluid-fuse --tier` specs) and
/// `spec.blockSize` out of its spec, in the place of a CacheRuntime's.
fn catalogue_cache_settings(spec: &mut Value) -> std::result::Result<CacheSettings, FieldError> {
    let Some(map) = spec.as_mapping_mut() else {
        return Ok(CacheSettings::default());
    };
    let tiers = match map.remove("tiers") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let seq = v.as_sequence().ok_or_else(|| {
                (
                    "spec.tiers".to_string(),
                    "expected a list of tier specs such as \"mem:2GiB\"".to_string(),
                )
            })?;
            let mut tiers = Vec::with_capacity(seq.len());
            for (i, t) in seq.iter().enumerate() {
                let field = format!("spec.tiers[{i}]");
                let t = t.as_str().ok_or_else(|| {
                    (
                        field.clone(),
                        "expected a string such as \"mem:2GiB\"".into(),
                    )
                })?;
                if t.contains(';') {
                    return Err((field, "must not contain ';'".into()));
                }
                tiers.push(TierSpec::parse(t).map_err(|e| (field, e.to_string()))?);
            }
            Some(Tiers::new(tiers).map_err(|e| ("spec.tiers".to_string(), e.to_string()))?)
        }
    };
    let block_size = match map.remove("blockSize") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let text = scalar_string(&v).ok_or_else(|| {
                (
                    "spec.blockSize".to_string(),
                    "expected a size such as \"4MiB\"".to_string(),
                )
            })?;
            Some(
                BlockSize::parse(&text, "spec.blockSize")
                    .map_err(|e| (String::new(), e.to_string()))?,
            )
        }
    };
    Ok(CacheSettings {
        tiers,
        block_size,
        clean_policy: CleanPolicy::OnDemand,
    })
}

/// Option values written as YAML numbers or booleans (`path-style: true`) are the strings
/// they spell, as in the option maps of the API server's objects.
fn options_as_strings(spec: &mut Value) {
    let mut maps: Vec<&mut Value> = Vec::new();
    if let Some(m) = spec.as_mapping_mut() {
        for (k, v) in m.iter_mut() {
            match k.as_str() {
                Some("sharedOptions") => maps.push(v),
                Some("mounts") => {
                    for mount in v.as_sequence_mut().into_iter().flatten() {
                        if let Some(o) = mount.get_mut("options") {
                            maps.push(o);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    for map in maps.into_iter().filter_map(Value::as_mapping_mut) {
        for (_, v) in map.iter_mut() {
            if let (Some(text), false) = (scalar_string(v), v.is_string()) {
                *v = Value::String(text);
            }
        }
    }
}

/// `mounts[0].bogus`: a field path as the catalogue's errors write it.
fn field_path(path: &serde_ignored::Path) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", field_path(parent)),
        Path::Map { parent, key } => match field_path(parent) {
            p if p.is_empty() => key.clone(),
            p => format!("{p}.{key}"),
        },
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => field_path(parent),
    }
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
        // A Secret's value only ever goes to a credential option (issue 27, hole 4: an endpoint
        // taken from a Secret sends the Secret to whoever the endpoint names).
        let from_secret = |name: &str| {
            format!(
                "{{mounts: [{{mountPoint: 's3://b', name: a, encryptOptions: [{{name: {name}, \
                 valueFrom: {{secretKeyRef: {{name: s, key: k}}}}}}]}}]}}"
            )
        };
        let e = err(&doc(&from_secret("endpoint")));
        assert!(
            e.contains("spec.mounts[0].encryptOptions[0].name") && e.contains("not a credential"),
            "{e}"
        );
        for ok in [
            "access-key",
            "fs.oss.accessKeyId",
            "secret-key",
            "session-token",
        ] {
            parse(&doc(&from_secret(ok))).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        let e = err(&doc(
            "{mounts: [{mountPoint: 's3://b', name: a}], sharedEncryptOptions: [{name: region, \
             valueFrom: {secretKeyRef: {name: s, key: k}}}]}",
        ));
        assert!(e.contains("spec.sharedEncryptOptions[0].name"), "{e}");
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
    fn a_catalogue_entry_is_the_same_dataset_as_the_api_object() {
        let yaml = r#"
apiVersion: data.fluid.io/v1alpha1
kind: Dataset
metadata: {name: imagenet, namespace: ml}
spec:
  mounts:
    - mountPoint: s3://imagenet/train
      name: train
      options: {endpoint: "http://127.0.0.1:8333", path-style: true}
  sharedOptions: {region: us-east-1}
  placement: Exclusive
"#;
        let from_file = parse(yaml).unwrap().get("ml", "imagenet").unwrap().clone();
        let object: crd::Dataset =
            serde_yaml::from_str(&yaml.replace("true}", "\"true\"}")).unwrap();
        let from_api = Dataset::from_resource(&object, None).unwrap();
        assert_eq!(from_file, from_api);
        assert!(from_file.exclusive);
        assert_eq!(from_file.mounts[0].options["path-style"], "true");
        assert_eq!(from_file.mounts[0].options["region"], "us-east-1");

        let e = err(&yaml.replace("Exclusive", "Sometimes"));
        assert!(
            e.contains("(ml/imagenet) spec") && e.contains("Sometimes"),
            "{e}"
        );
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
