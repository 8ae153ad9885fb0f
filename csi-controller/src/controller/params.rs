//! The StorageClass parameters of a CreateVolume, checked into a [`Plan`], and the volume id
//! and capacity the request asks for.
//!
//! Parameters:
//!
//! | name | meaning |
//! |---|---|
//! | `dataset` | name of a Dataset in the PVC's namespace (`csi.storage.k8s.io/pvc/namespace`, default `default`) |
//! | `mountPoint` | instead of `dataset`: one mount point URL mounted at the volume's root |
//! | `mountOptions` | with `mountPoint`: its options as `k=v,k=v` (no secrets) |
//! | `tiers` | cache tiers, `;`-separated `fluid-fuse --tier` specs; override the Dataset's |
//! | `blockSize` | cache block size, e.g. `4MiB`; overrides the Dataset's |
//! | `subPath` | a relative path inside the dataset that pods see as the volume's root |
//!
//! Parameters starting with `csi.storage.k8s.io/` are the external-provisioner's and are
//! accepted; any other name is refused. Secrets never appear in parameters or in the volume
//! context: the external-provisioner hands node-stage secrets to the node plugin itself.

use super::*;

pub const PARAM_DATASET: &str = "dataset";
pub const PARAM_MOUNT_POINT: &str = "mountPoint";
pub const PARAM_MOUNT_OPTIONS: &str = "mountOptions";
pub const PARAM_TIERS: &str = "tiers";
pub const PARAM_BLOCK_SIZE: &str = "blockSize";
pub const PARAM_SUB_PATH: &str = "subPath";
/// The external-provisioner's parameters (`--extra-create-metadata`) start with this.
pub const K8S_PREFIX: &str = "csi.storage.k8s.io/";
/// The PVC's namespace: where the `dataset` parameter is looked up, and only there.
pub const PVC_NAMESPACE: &str = "csi.storage.k8s.io/pvc/namespace";
const KNOWN_PARAMS: &[&str] = &[
    PARAM_DATASET,
    PARAM_MOUNT_POINT,
    PARAM_MOUNT_OPTIONS,
    PARAM_TIERS,
    PARAM_BLOCK_SIZE,
    PARAM_SUB_PATH,
];
/// The name of the one mount of a `mountPoint` volume (node-stage secret keys of the form
/// `NAME/OPTION` address it as `default/OPTION`).
pub const INLINE_MOUNT_NAME: &str = "default";

/// Longest volume id (the CSI spec's limit).
pub const MAX_VOLUME_ID: usize = 128;
const ID_PREFIX: &str = "fluid-";

/// The volume id of a CreateVolume name: `fluid-<16 hex of sha256(name)>-<sanitized name>`,
/// at most 128 bytes of `[a-z0-9-]`. The hash keeps ids distinct when sanitizing or
/// truncating makes names look alike.
pub fn volume_id(name: &str) -> String {
    let digest = Sha256::digest(name.as_bytes());
    let hash: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    let head = format!("{ID_PREFIX}{hash}");
    let room = MAX_VOLUME_ID - head.len() - 1;
    let sanitized: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(room)
        .collect();
    let sanitized = sanitized.trim_matches('-');
    if sanitized.is_empty() {
        head
    } else {
        format!("{head}-{sanitized}")
    }
}

/// What a CreateVolume request's parameters make of a volume.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The namespace the Dataset is resolved in.
    pub namespace: String,
    /// The parameters that shape the volume (all but `csi.storage.k8s.io/…`).
    pub parameters: BTreeMap<String, String>,
    pub context: VolumeContext,
}

/// Where a volume's mounts come from.
enum VolumeSource {
    /// A Dataset of the PVC's namespace, by name.
    Dataset(String),
    /// One mount point URL at the volume's root (`mountPoint` + `mountOptions`).
    Inline(MountSpec),
}

/// The StorageClass parameters of a CreateVolume, checked: past this point nothing is a string
/// that a later layer must check again.
struct Parameters {
    namespace: String,
    /// All but `csi.storage.k8s.io/…`.
    own: BTreeMap<String, String>,
    source: VolumeSource,
    tiers: Option<Tiers>,
    block_size: Option<BlockSize>,
    sub_path: Option<String>,
}

impl Parameters {
    fn parse(params: &HashMap<String, String>) -> Result<Parameters> {
        let own: BTreeMap<String, String> = params
            .iter()
            .filter(|(k, _)| !k.starts_with(K8S_PREFIX))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Some(k) = own.keys().find(|k| is_secret(k)) {
            return Err(Error::invalid(
                format!("parameters.{k}"),
                "looks like a secret; secrets are not StorageClass parameters: reference a Secret with csi.storage.k8s.io/node-stage-secret-name/-namespace",
            ));
        }
        let unknown: Vec<&str> = own
            .keys()
            .map(String::as_str)
            .filter(|k| !KNOWN_PARAMS.contains(k))
            .collect();
        if !unknown.is_empty() {
            return Err(Error::invalid(
                "parameters",
                format!(
                    "unknown parameter(s) {}; known: {} and csi.storage.k8s.io/*",
                    unknown.join(", "),
                    KNOWN_PARAMS.join(", ")
                ),
            ));
        }
        let namespace = params
            .get(PVC_NAMESPACE)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or(DEFAULT_NAMESPACE)
            .to_string();
        check_namespace(&namespace)
            .map_err(|m| Error::invalid(format!("parameters.{PVC_NAMESPACE}"), m))?;
        let non_empty = |key: &str| -> Result<Option<&String>> {
            match own.get(key) {
                Some(v) if v.trim().is_empty() => Err(Error::invalid(
                    format!("parameters.{key}"),
                    "must not be empty",
                )),
                other => Ok(other),
            }
        };
        let source = match (non_empty(PARAM_DATASET)?, non_empty(PARAM_MOUNT_POINT)?) {
            (Some(_), Some(_)) => {
                return Err(Error::invalid(
                    "parameters",
                    format!("give {PARAM_DATASET} or {PARAM_MOUNT_POINT}, not both"),
                ));
            }
            (None, None) => {
                return Err(Error::invalid(
                    "parameters",
                    format!(
                        "one of {PARAM_DATASET} (a Dataset in the PVC's namespace) or {PARAM_MOUNT_POINT} (a mount point URL) is required"
                    ),
                ));
            }
            (Some(name), None) => {
                dataset_name(name, &namespace, own.contains_key(PARAM_MOUNT_OPTIONS))?
            }
            (None, Some(url)) => inline_mount(url, own.get(PARAM_MOUNT_OPTIONS))?,
        };
        let tiers = own
            .get(PARAM_TIERS)
            .map(|t| Tiers::parse_list(t, &format!("parameters.{PARAM_TIERS}")))
            .transpose()?;
        let block_size = non_empty(PARAM_BLOCK_SIZE)?
            .map(|bs| BlockSize::parse(bs, &format!("parameters.{PARAM_BLOCK_SIZE}")))
            .transpose()?;
        let sub_path = match own.get(PARAM_SUB_PATH).map(|s| s.trim_end_matches('/')) {
            None | Some("") => None,
            Some(sub) => {
                check_sub_path(sub).map_err(|e| {
                    Error::invalid(format!("parameters.{PARAM_SUB_PATH}"), e.to_string())
                })?;
                Some(sub.to_string())
            }
        };
        Ok(Parameters {
            namespace,
            own,
            source,
            tiers,
            block_size,
            sub_path,
        })
    }
}

/// The `dataset` parameter: a Dataset name, looked up in the PVC's namespace only.
fn dataset_name(name: &str, namespace: &str, with_options: bool) -> Result<VolumeSource> {
    let field = format!("parameters.{PARAM_DATASET}");
    if with_options {
        return Err(Error::invalid(
            format!("parameters.{PARAM_MOUNT_OPTIONS}"),
            format!("only with {PARAM_MOUNT_POINT}; a Dataset's options are in its spec.mounts"),
        ));
    }
    if name.contains('/') {
        return Err(Error::invalid(
            field,
            format!(
                "{name:?}: give a Dataset name without a namespace; Datasets are resolved only in the PVC's namespace ({namespace:?})"
            ),
        ));
    }
    check_name(name).map_err(|m| Error::invalid(&field, m))?;
    Ok(VolumeSource::Dataset(name.to_string()))
}

/// The `mountPoint` and `mountOptions` parameters: one mount at the volume's root.
fn inline_mount(url: &str, options: Option<&String>) -> Result<VolumeSource> {
    let options = parse_mount_options(options.map(String::as_str).unwrap_or(""))?;
    if url.contains('@') && !url.starts_with("local://") {
        // Refused before parsing, whose errors quote the URL: it may hold a password.
        return Err(Error::invalid(
            format!("parameters.{PARAM_MOUNT_POINT}"),
            "credentials in the URL are not allowed; pass them as CSI node-stage secrets",
        ));
    }
    MountPoint::parse(
        url,
        options.clone(),
        &format!("parameters.{PARAM_MOUNT_POINT}"),
    )?;
    Ok(VolumeSource::Inline(MountSpec {
        mount_point: url.to_string(),
        name: INLINE_MOUNT_NAME.to_string(),
        path: Some("/".to_string()),
        options,
        ..Default::default()
    }))
}

/// Checks the parameters, then merges them over the Dataset they name (a StorageClass's
/// tiers and block size win over its CacheRuntime's).
pub fn plan(params: &HashMap<String, String>, catalogue: &Catalogue) -> Result<Plan> {
    let p = Parameters::parse(params)?;
    let mut context = match &p.source {
        VolumeSource::Dataset(name) => catalogue
            .get(&p.namespace, name)
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "parameters.{PARAM_DATASET}: Dataset {name:?} not found in namespace {:?} (Datasets are resolved only in the PVC's namespace)",
                    p.namespace
                ))
            })?
            .volume_context(),
        VolumeSource::Inline(mount) => VolumeContext {
            mounts: vec![mount.clone()],
            ..Default::default()
        },
    };
    context.tiers = p.tiers.or(context.tiers);
    context.block_size = p.block_size.or(context.block_size);
    context.sub_path = p.sub_path;
    // The node runs the same checks on the context; fail here rather than at mount time.
    context
        .validate()
        .map_err(|e| Error::from_data("parameters: ", e))?;
    Ok(Plan {
        namespace: p.namespace,
        parameters: p.own,
        context,
    })
}

/// `k=v,k=v` into options; refuses secrets (their names, never their values, in errors).
pub fn parse_mount_options(s: &str) -> Result<BTreeMap<String, String>> {
    let field = format!("parameters.{PARAM_MOUNT_OPTIONS}");
    let mut out = BTreeMap::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (k, v) = item
            .split_once('=')
            .map(|(k, v)| (k.trim(), v.trim()))
            .ok_or_else(|| Error::invalid(&field, "expected KEY=VALUE items separated by ','"))?;
        if k.is_empty() {
            return Err(Error::invalid(&field, "an option with an empty name"));
        }
        if is_secret(k) {
            return Err(Error::invalid(
                format!("{field}.{k}"),
                "secrets are not StorageClass parameters: reference a Secret with csi.storage.k8s.io/node-stage-secret-name/-namespace",
            ));
        }
        if out.insert(k.to_string(), v.to_string()).is_some() {
            return Err(Error::invalid(format!("{field}.{k}"), "given twice"));
        }
    }
    Ok(out)
}

/// The capacity a range asks for: required_bytes, else limit_bytes, else 0.
pub fn capacity(range: Option<&CapacityRange>) -> Result<i64> {
    let Some(r) = range else { return Ok(0) };
    if r.required_bytes < 0 {
        return Err(Error::invalid(
            "capacity_range.required_bytes",
            "must not be negative",
        ));
    }
    if r.limit_bytes < 0 {
        return Err(Error::invalid(
            "capacity_range.limit_bytes",
            "must not be negative",
        ));
    }
    if r.limit_bytes > 0 && r.limit_bytes < r.required_bytes {
        return Err(Error::invalid(
            "capacity_range.limit_bytes",
            format!(
                "{} is less than required_bytes {}",
                r.limit_bytes, r.required_bytes
            ),
        ));
    }
    Ok(if r.required_bytes > 0 {
        r.required_bytes
    } else {
        r.limit_bytes
    })
}

/// Whether an existing volume of `existing` bytes satisfies the range (the CSI spec's
/// "compatible with the specified capacity_range").
pub(super) fn capacity_fits(existing: i64, range: Option<&CapacityRange>) -> bool {
    range.is_none_or(|r| {
        existing >= r.required_bytes && (r.limit_bytes == 0 || existing <= r.limit_bytes)
    })
}
