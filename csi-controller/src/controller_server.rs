//! The CSI Controller service: CreateVolume, DeleteVolume, ValidateVolumeCapabilities,
//! ListVolumes and ControllerGetCapabilities. Every other RPC answers UNIMPLEMENTED.
//!
//! A Fluid volume is a dataset: creating one provisions nothing remote, it checks the
//! StorageClass parameters, resolves the Dataset in the PVC's namespace, and records the
//! volume context the node plugin needs to mount it.
//!
//! Parameters (from the StorageClass):
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

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use fluid_proto::csi::controller_server::Controller;
use fluid_proto::csi::controller_service_capability::{self, rpc};
use fluid_proto::csi::list_volumes_response::Entry;
use fluid_proto::csi::validate_volume_capabilities_response::Confirmed;
use fluid_proto::csi::volume_capability::{AccessType, access_mode};
use fluid_proto::csi::*;
use fluid_volume::context::{VolumeContext, check_sub_path};
use fluid_volume::dataset::MountSpec;
use fluid_volume::mountpoint::MountPoint;
use fluid_volume::options::is_secret;
use fluid_volume::size::BlockSize;
use fluid_volume::tier::Tiers;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;
use tonic::{Request, Response, Status};

use crate::catalogue::{self, Catalogue, DEFAULT_NAMESPACE, check_name, check_namespace};
use crate::crd;
use crate::error::{Error, Result};
use crate::store::{Store, VolumeRecord, decode_token, encode_token};

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
fn capacity_fits(existing: i64, range: Option<&CapacityRange>) -> bool {
    range.is_none_or(|r| {
        existing >= r.required_bytes && (r.limit_bytes == 0 || existing <= r.limit_bytes)
    })
}

/// Every capability must be a mount with a known access mode.
fn check_capabilities(caps: &[VolumeCapability]) -> Result<()> {
    if caps.is_empty() {
        return Err(Error::invalid(
            "volume_capabilities",
            "at least one capability is required",
        ));
    }
    for (i, cap) in caps.iter().enumerate() {
        if let Err(message) = capability_problem(cap) {
            return Err(Error::invalid(format!("volume_capabilities[{i}]"), message));
        }
    }
    Ok(())
}

/// Why a capability cannot be offered, if it cannot.
fn capability_problem(cap: &VolumeCapability) -> std::result::Result<(), String> {
    match &cap.access_type {
        Some(AccessType::Mount(_)) => {}
        Some(AccessType::Block(_)) => {
            return Err(
                "access_type block is not supported: Fluid volumes are file systems (use volumeMode: Filesystem)".into(),
            );
        }
        None => return Err("access_type is required (mount)".into()),
    }
    match cap
        .access_mode
        .as_ref()
        .map(|m| access_mode::Mode::try_from(m.mode))
    {
        Some(Ok(mode)) if mode != access_mode::Mode::Unknown => Ok(()),
        _ => Err("access_mode is required (e.g. MULTI_NODE_READER_ONLY)".into()),
    }
}

fn volume_of(r: &VolumeRecord) -> Volume {
    Volume {
        capacity_bytes: r.capacity_bytes,
        volume_id: r.volume_id.clone(),
        volume_context: r
            .volume_context
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        content_source: None,
        accessible_topology: Vec::new(),
    }
}

fn rpc_capability(t: rpc::Type) -> ControllerServiceCapability {
    ControllerServiceCapability {
        r#type: Some(controller_service_capability::Type::Rpc(
            controller_service_capability::Rpc { r#type: t as i32 },
        )),
    }
}

/// With `--kubernetes`: a catalogue holding the Dataset `name` of the PVC's namespace (and
/// its CacheRuntime's tiers) as the API server has it, or an empty one when there is none
/// (then `plan` gives the usual NOT_FOUND). A malformed name is left for `plan` to refuse.
async fn dataset_from_api(
    client: &kube::Client,
    params: &HashMap<String, String>,
    name: &str,
) -> Result<Catalogue> {
    let namespace = params
        .get(PVC_NAMESPACE)
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or(DEFAULT_NAMESPACE);
    let mut catalogue = Catalogue::default();
    if check_namespace(namespace).is_err() || check_name(name).is_err() {
        return Ok(catalogue);
    }
    let datasets: kube::Api<crd::Dataset> = kube::Api::namespaced(client.clone(), namespace);
    let Some(ds) = datasets.get_opt(name).await? else {
        return Ok(catalogue);
    };
    let runtimes: kube::Api<crd::CacheRuntime> = kube::Api::namespaced(client.clone(), namespace);
    let runtime = runtimes.get_opt(name).await?;
    catalogue.insert(catalogue::Dataset::from_resource(
        &ds,
        runtime.as_ref().map(|r| &r.spec),
    )?);
    Ok(catalogue)
}

#[derive(Clone)]
pub struct ControllerService {
    catalogue: Arc<Catalogue>,
    /// With `--kubernetes`, Datasets are read from the API server instead of `catalogue`.
    kube: Option<kube::Client>,
    /// One lock around the store: CreateVolume and DeleteVolume calls are serialised, so two
    /// concurrent creates of one name make one volume.
    store: Arc<Mutex<Store>>,
}

impl ControllerService {
    pub fn new(catalogue: Catalogue, store: Store) -> Self {
        ControllerService {
            catalogue: Arc::new(catalogue),
            kube: None,
            store: Arc::new(Mutex::new(store)),
        }
    }

    /// Resolves the `dataset` parameter from the API server.
    pub fn with_kubernetes(mut self, client: kube::Client) -> Self {
        self.kube = Some(client);
        self
    }

    async fn create(&self, req: CreateVolumeRequest) -> Result<Volume> {
        if req.name.is_empty() {
            return Err(Error::invalid("name", "required"));
        }
        check_capabilities(&req.volume_capabilities)?;
        let capacity_bytes = capacity(req.capacity_range.as_ref())?;
        if req.volume_content_source.is_some() {
            return Err(Error::invalid(
                "volume_content_source",
                "creating a volume from a snapshot or another volume is not supported",
            ));
        }
        if !req.mutable_parameters.is_empty() {
            return Err(Error::invalid(
                "mutable_parameters",
                "not supported (this plugin does not offer MODIFY_VOLUME)",
            ));
        }
        let plan = match (&self.kube, req.parameters.get(PARAM_DATASET)) {
            (Some(client), Some(name)) => {
                let catalogue = dataset_from_api(client, &req.parameters, name).await?;
                plan(&req.parameters, &catalogue)?
            }
            _ => plan(&req.parameters, &self.catalogue)?,
        };
        let id = volume_id(&req.name);

        let mut store = self.store.lock().await;
        if let Some(existing) = store.get(&id) {
            if existing.name != req.name {
                return Err(Error::AlreadyExists(format!(
                    "volume id {id} already belongs to volume {:?}",
                    existing.name
                )));
            }
            if existing.parameters != plan.parameters || existing.namespace != plan.namespace {
                return Err(Error::AlreadyExists(format!(
                    "volume {:?} already exists with other parameters",
                    req.name
                )));
            }
            if !capacity_fits(existing.capacity_bytes, req.capacity_range.as_ref()) {
                return Err(Error::AlreadyExists(format!(
                    "volume {:?} already exists with capacity {} bytes, outside the requested capacity_range",
                    req.name, existing.capacity_bytes
                )));
            }
            tracing::debug!(volume_id = %id, name = %req.name, "CreateVolume: exists already");
            return Ok(volume_of(existing));
        }
        let record = VolumeRecord {
            version: 0,
            volume_id: id,
            name: req.name,
            capacity_bytes,
            parameters: plan.parameters,
            namespace: plan.namespace,
            volume_context: plan.context.to_map(),
        };
        store.insert(record.clone())?;
        tracing::info!(
            volume_id = %record.volume_id,
            name = %record.name,
            dataset = plan.context.dataset.as_deref().unwrap_or("-"),
            mounts = plan.context.mounts.len(),
            capacity_bytes,
            "volume created"
        );
        Ok(volume_of(&record))
    }

    async fn delete(&self, req: DeleteVolumeRequest) -> Result<()> {
        if req.volume_id.is_empty() {
            return Err(Error::invalid("volume_id", "required"));
        }
        let mut store = self.store.lock().await;
        if store.remove(&req.volume_id)? {
            tracing::info!(volume_id = %req.volume_id, "volume deleted");
        } else {
            tracing::debug!(volume_id = %req.volume_id, "DeleteVolume: no such volume (already deleted)");
        }
        Ok(())
    }

    async fn validate(
        &self,
        req: ValidateVolumeCapabilitiesRequest,
    ) -> Result<ValidateVolumeCapabilitiesResponse> {
        if req.volume_id.is_empty() {
            return Err(Error::invalid("volume_id", "required"));
        }
        if req.volume_capabilities.is_empty() {
            return Err(Error::invalid(
                "volume_capabilities",
                "at least one capability is required",
            ));
        }
        if self.store.lock().await.get(&req.volume_id).is_none() {
            return Err(Error::NotFound(format!(
                "volume {:?} not found",
                req.volume_id
            )));
        }
        for (i, cap) in req.volume_capabilities.iter().enumerate() {
            if let Err(why) = capability_problem(cap) {
                return Ok(ValidateVolumeCapabilitiesResponse {
                    confirmed: None,
                    message: format!("volume_capabilities[{i}]: {why}"),
                });
            }
        }
        Ok(ValidateVolumeCapabilitiesResponse {
            confirmed: Some(Confirmed {
                volume_context: req.volume_context,
                volume_capabilities: req.volume_capabilities,
                parameters: req.parameters,
                mutable_parameters: req.mutable_parameters,
            }),
            message: String::new(),
        })
    }

    async fn list(&self, req: ListVolumesRequest) -> Result<ListVolumesResponse> {
        if req.max_entries < 0 {
            return Err(Error::invalid("max_entries", "must not be negative"));
        }
        let start = if req.starting_token.is_empty() {
            None
        } else {
            Some(decode_token(&req.starting_token)?)
        };
        let store = self.store.lock().await;
        let (page, next) = store.page(start.as_deref(), req.max_entries as usize);
        Ok(ListVolumesResponse {
            entries: page
                .into_iter()
                .map(|r| Entry {
                    volume: Some(volume_of(r)),
                    status: None,
                })
                .collect(),
            next_token: next.map(|id| encode_token(&id)).unwrap_or_default(),
        })
    }
}

/// Logs a failed call (its message names fields, never secret values) and makes the status.
fn reply<T>(rpc: &str, result: Result<T>) -> std::result::Result<Response<T>, Status> {
    match result {
        Ok(v) => Ok(Response::new(v)),
        Err(e) => {
            let status = Status::from(e);
            tracing::warn!(rpc, code = ?status.code(), "{}", status.message());
            Err(status)
        }
    }
}

fn unimplemented<T>(rpc: &'static str) -> std::result::Result<Response<T>, Status> {
    Err(Error::Unimplemented(rpc).into())
}

#[tonic::async_trait]
impl Controller for ControllerService {
    async fn create_volume(
        &self,
        request: Request<CreateVolumeRequest>,
    ) -> std::result::Result<Response<CreateVolumeResponse>, Status> {
        let result = self.create(request.into_inner()).await;
        reply(
            "CreateVolume",
            result.map(|v| CreateVolumeResponse { volume: Some(v) }),
        )
    }

    async fn delete_volume(
        &self,
        request: Request<DeleteVolumeRequest>,
    ) -> std::result::Result<Response<DeleteVolumeResponse>, Status> {
        let result = self.delete(request.into_inner()).await;
        reply("DeleteVolume", result.map(|()| DeleteVolumeResponse {}))
    }

    async fn controller_publish_volume(
        &self,
        _: Request<ControllerPublishVolumeRequest>,
    ) -> std::result::Result<Response<ControllerPublishVolumeResponse>, Status> {
        unimplemented("ControllerPublishVolume")
    }

    async fn controller_unpublish_volume(
        &self,
        _: Request<ControllerUnpublishVolumeRequest>,
    ) -> std::result::Result<Response<ControllerUnpublishVolumeResponse>, Status> {
        unimplemented("ControllerUnpublishVolume")
    }

    async fn validate_volume_capabilities(
        &self,
        request: Request<ValidateVolumeCapabilitiesRequest>,
    ) -> std::result::Result<Response<ValidateVolumeCapabilitiesResponse>, Status> {
        let result = self.validate(request.into_inner()).await;
        reply("ValidateVolumeCapabilities", result)
    }

    async fn list_volumes(
        &self,
        request: Request<ListVolumesRequest>,
    ) -> std::result::Result<Response<ListVolumesResponse>, Status> {
        let result = self.list(request.into_inner()).await;
        reply("ListVolumes", result)
    }

    async fn get_capacity(
        &self,
        _: Request<GetCapacityRequest>,
    ) -> std::result::Result<Response<GetCapacityResponse>, Status> {
        unimplemented("GetCapacity")
    }

    async fn controller_get_capabilities(
        &self,
        _: Request<ControllerGetCapabilitiesRequest>,
    ) -> std::result::Result<Response<ControllerGetCapabilitiesResponse>, Status> {
        Ok(Response::new(ControllerGetCapabilitiesResponse {
            capabilities: vec![
                rpc_capability(rpc::Type::CreateDeleteVolume),
                rpc_capability(rpc::Type::ListVolumes),
            ],
        }))
    }

    async fn create_snapshot(
        &self,
        _: Request<CreateSnapshotRequest>,
    ) -> std::result::Result<Response<CreateSnapshotResponse>, Status> {
        unimplemented("CreateSnapshot")
    }

    async fn delete_snapshot(
        &self,
        _: Request<DeleteSnapshotRequest>,
    ) -> std::result::Result<Response<DeleteSnapshotResponse>, Status> {
        unimplemented("DeleteSnapshot")
    }

    async fn list_snapshots(
        &self,
        _: Request<ListSnapshotsRequest>,
    ) -> std::result::Result<Response<ListSnapshotsResponse>, Status> {
        unimplemented("ListSnapshots")
    }

    async fn get_snapshot(
        &self,
        _: Request<GetSnapshotRequest>,
    ) -> std::result::Result<Response<GetSnapshotResponse>, Status> {
        unimplemented("GetSnapshot")
    }

    async fn controller_expand_volume(
        &self,
        _: Request<ControllerExpandVolumeRequest>,
    ) -> std::result::Result<Response<ControllerExpandVolumeResponse>, Status> {
        unimplemented("ControllerExpandVolume")
    }

    async fn controller_get_volume(
        &self,
        _: Request<ControllerGetVolumeRequest>,
    ) -> std::result::Result<Response<ControllerGetVolumeResponse>, Status> {
        unimplemented("ControllerGetVolume")
    }

    async fn controller_modify_volume(
        &self,
        _: Request<ControllerModifyVolumeRequest>,
    ) -> std::result::Result<Response<ControllerModifyVolumeResponse>, Status> {
        unimplemented("ControllerModifyVolume")
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use fluid_proto::csi::volume_capability::{AccessMode, BlockVolume, MountVolume};

    fn catalogue() -> Catalogue {
        Catalogue::parse(
            r#"
apiVersion: data.fluid.io/v1alpha1
kind: Dataset
metadata: {name: imagenet, namespace: ml}
spec:
  mounts: [{mountPoint: "s3://imagenet/train", name: train, options: {endpoint: "http://127.0.0.1:8333"}}]
  tiers: ["mem:1GiB"]
---
apiVersion: data.fluid.io/v1alpha1
kind: Dataset
metadata: {name: other, namespace: team-b}
spec:
  mounts: [{mountPoint: "local:///tmp", name: data}]
"#,
            Path::new("test.yaml"),
        )
        .unwrap()
    }

    fn params(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn invalid_field(r: Result<Plan>) -> String {
        match r {
            Err(Error::Invalid { field, .. }) => field,
            other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
        }
    }

    #[test]
    fn volume_ids_are_deterministic_bounded_and_distinct() {
        let a = volume_id("pvc-0b6f7c3e-1234");
        assert_eq!(a, volume_id("pvc-0b6f7c3e-1234"));
        assert!(
            a.starts_with("fluid-") && a.ends_with("-pvc-0b6f7c3e-1234"),
            "{a}"
        );
        assert_ne!(volume_id("A_b"), volume_id("a-b"));
        let long = "x".repeat(300);
        assert_eq!(volume_id(&long).len(), MAX_VOLUME_ID);
        for name in ["é/é", "---", "Ünïcode name with spaces", &"ß".repeat(200)] {
            let id = volume_id(name);
            assert!(id.len() <= MAX_VOLUME_ID, "{id}");
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "{id}"
            );
            assert!(!id.ends_with('-'), "{id}");
        }
    }

    #[test]
    fn plans_a_dataset_in_the_pvc_namespace_only() {
        let c = catalogue();
        let p = plan(
            &params(&[
                ("dataset", "imagenet"),
                (PVC_NAMESPACE, "ml"),
                ("csi.storage.k8s.io/pvc/name", "data"),
            ]),
            &c,
        )
        .unwrap();
        assert_eq!(p.namespace, "ml");
        assert_eq!(p.context.dataset.as_deref(), Some("ml/imagenet"));
        assert_eq!(p.context.tiers.unwrap().to_string(), "mem:1GiB");
        assert_eq!(
            p.parameters,
            BTreeMap::from([("dataset".to_string(), "imagenet".to_string())])
        );
        // From another namespace, or with a namespace in the name: refused.
        let e = plan(&params(&[("dataset", "other"), (PVC_NAMESPACE, "ml")]), &c).unwrap_err();
        assert!(
            matches!(&e, Error::NotFound(m) if m.contains("parameters.dataset") && m.contains("\"ml\"")),
            "{e}"
        );
        assert!(
            plan(&params(&[("dataset", "imagenet")]), &c).is_err(),
            "default namespace has no imagenet"
        );
        assert_eq!(
            invalid_field(plan(
                &params(&[("dataset", "team-b/other"), (PVC_NAMESPACE, "ml")]),
                &c
            )),
            "parameters.dataset"
        );
        // Overrides.
        let p = plan(
            &params(&[
                ("dataset", "other"),
                (PVC_NAMESPACE, "team-b"),
                ("tiers", "mem:2GiB; ssd:/c:1GiB"),
                ("blockSize", "1MiB"),
                ("subPath", "a/b/"),
            ]),
            &c,
        )
        .unwrap();
        assert_eq!(
            p.context.tiers.as_ref().unwrap().specs(),
            Tiers::parse_list("mem:2GiB;ssd:/c:1GiB", "t")
                .unwrap()
                .specs()
        );
        assert_eq!(p.context.block_size.unwrap().to_string(), "1MiB");
        assert_eq!(p.context.sub_path.as_deref(), Some("a/b"));
    }

    #[test]
    fn plans_an_inline_mount_point() {
        let c = Catalogue::default();
        let p = plan(
            &params(&[
                ("mountPoint", "s3://bucket/x"),
                ("mountOptions", "endpoint=http://h:1, path-style=true"),
            ]),
            &c,
        )
        .unwrap();
        assert_eq!(p.context.dataset, None);
        assert_eq!(p.context.mounts.len(), 1);
        assert_eq!(p.context.mounts[0].path.as_deref(), Some("/"));
        assert_eq!(
            p.context.mounts[0]
                .options
                .get("endpoint")
                .map(String::as_str),
            Some("http://h:1")
        );
        assert_eq!(p.namespace, "default");
    }

    #[test]
    fn refuses_bad_parameters_naming_them() {
        let c = catalogue();
        let field = |kv: &[(&str, &str)]| invalid_field(plan(&params(kv), &c));
        assert_eq!(field(&[]), "parameters");
        assert_eq!(
            field(&[("dataset", "imagenet"), ("mountPoint", "s3://b")]),
            "parameters"
        );
        assert_eq!(field(&[("mountPoint", "ftp://b")]), "parameters.mountPoint");
        for url in ["s3://ak:sk@b", "ak:sk@b"] {
            let e = plan(&params(&[("mountPoint", url)]), &c).unwrap_err();
            assert!(
                matches!(&e, Error::Invalid { field, .. } if field == "parameters.mountPoint"),
                "{e}"
            );
            assert!(!e.to_string().contains("sk@"), "{e}");
        }
        assert_eq!(
            field(&[("mountPoint", "s3://b"), ("mountOptions", "secret-key=x")]),
            "parameters.mountOptions.secret-key"
        );
        assert_eq!(
            field(&[("mountPoint", "s3://b"), ("mountOptions", "novalue")]),
            "parameters.mountOptions"
        );
        assert_eq!(
            field(&[("mountPoint", "s3://b"), ("mountOptions", "a=1,a=2")]),
            "parameters.mountOptions.a"
        );
        assert_eq!(
            field(&[("mountPoint", "s3://b"), ("password", "x")]),
            "parameters.password"
        );
        assert_eq!(
            field(&[("mountPoint", "s3://b"), ("tiers", "mem:lots")]),
            "parameters.tiers"
        );
        assert_eq!(
            field(&[("mountPoint", "s3://b"), ("tiers", ";")]),
            "parameters.tiers"
        );
        assert_eq!(
            field(&[("mountPoint", "s3://b"), ("blockSize", "0")]),
            "parameters.blockSize"
        );
        assert_eq!(
            field(&[("mountPoint", "s3://b"), ("subPath", "../x")]),
            "parameters.subPath"
        );
        assert_eq!(field(&[("mountPoint", "")]), "parameters.mountPoint");
        assert_eq!(
            field(&[
                ("dataset", "imagenet"),
                (PVC_NAMESPACE, "ml"),
                ("mountOptions", "a=b")
            ]),
            "parameters.mountOptions"
        );
        assert_eq!(
            field(&[("mountPoint", "s3://b"), (PVC_NAMESPACE, "Bad_NS")]),
            format!("parameters.{PVC_NAMESPACE}")
        );
        let e = plan(
            &params(&[("mountPoint", "s3://b"), ("color", "red"), ("zz", "1")]),
            &c,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("color, zz"), "{e}");
        // The provisioner's own parameters are accepted, even secret-looking ones.
        assert!(
            plan(
                &params(&[
                    ("mountPoint", "s3://b"),
                    ("csi.storage.k8s.io/node-stage-secret-name", "s")
                ]),
                &c
            )
            .is_ok()
        );
    }

    #[test]
    fn capacities() {
        let r = |required_bytes, limit_bytes| CapacityRange {
            required_bytes,
            limit_bytes,
        };
        assert_eq!(capacity(None).unwrap(), 0);
        assert_eq!(capacity(Some(&r(10, 0))).unwrap(), 10);
        assert_eq!(capacity(Some(&r(0, 20))).unwrap(), 20);
        assert_eq!(capacity(Some(&r(10, 20))).unwrap(), 10);
        assert!(
            matches!(capacity(Some(&r(20, 10))), Err(Error::Invalid { field, .. }) if field == "capacity_range.limit_bytes")
        );
        assert!(capacity(Some(&r(-1, 0))).is_err());
        assert!(capacity_fits(10, Some(&r(10, 10))));
        assert!(capacity_fits(10, Some(&r(5, 0))));
        assert!(!capacity_fits(10, Some(&r(20, 20))));
        assert!(!capacity_fits(10, Some(&r(0, 5))));
    }

    fn cap(block: bool, mode: access_mode::Mode) -> VolumeCapability {
        VolumeCapability {
            access_type: Some(if block {
                AccessType::Block(BlockVolume {})
            } else {
                AccessType::Mount(MountVolume::default())
            }),
            access_mode: Some(AccessMode { mode: mode as i32 }),
        }
    }

    #[tokio::test]
    async fn create_is_idempotent_and_serialised() {
        let dir = tempfile::tempdir().unwrap();
        let svc = ControllerService::new(catalogue(), Store::open(dir.path()).unwrap());
        let req = |name: &str, required_bytes| CreateVolumeRequest {
            name: name.to_string(),
            capacity_range: Some(CapacityRange {
                required_bytes,
                limit_bytes: 0,
            }),
            volume_capabilities: vec![cap(false, access_mode::Mode::SingleNodeWriter)],
            parameters: params(&[("mountPoint", "local:///tmp")]),
            ..Default::default()
        };
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let svc = svc.clone();
                let r = req("same", 1 << 30);
                tokio::spawn(async move { svc.create(r).await })
            })
            .collect();
        let mut ids = Vec::new();
        for t in tasks {
            ids.push(t.await.unwrap().unwrap().volume_id);
        }
        ids.dedup();
        assert_eq!(ids.len(), 1);
        assert_eq!(svc.store.lock().await.len(), 1);
        assert!(matches!(
            svc.create(req("same", 2 << 30)).await,
            Err(Error::AlreadyExists(_))
        ));
        let mut other = req("same", 1 << 30);
        other.parameters.insert("blockSize".into(), "1MiB".into());
        assert!(matches!(
            svc.create(other).await,
            Err(Error::AlreadyExists(_))
        ));
        let mut block = req("b", 0);
        block
            .volume_capabilities
            .push(cap(true, access_mode::Mode::SingleNodeWriter));
        assert!(
            matches!(svc.create(block).await, Err(Error::Invalid { field, .. }) if field == "volume_capabilities[1]")
        );
        let mut no_mode = req("b", 0);
        no_mode.volume_capabilities[0].access_mode = None;
        assert!(svc.create(no_mode).await.is_err());
    }

    #[tokio::test]
    async fn validate_confirms_mounts_only() {
        let dir = tempfile::tempdir().unwrap();
        let svc = ControllerService::new(catalogue(), Store::open(dir.path()).unwrap());
        let vol = svc
            .create(CreateVolumeRequest {
                name: "v".into(),
                volume_capabilities: vec![cap(false, access_mode::Mode::MultiNodeReaderOnly)],
                parameters: params(&[("dataset", "other"), (PVC_NAMESPACE, "team-b")]),
                ..Default::default()
            })
            .await
            .unwrap();
        let validate = |caps: Vec<VolumeCapability>| ValidateVolumeCapabilitiesRequest {
            volume_id: vol.volume_id.clone(),
            volume_capabilities: caps,
            ..Default::default()
        };
        let ok = svc
            .validate(validate(vec![cap(
                false,
                access_mode::Mode::MultiNodeMultiWriter,
            )]))
            .await
            .unwrap();
        assert!(ok.confirmed.is_some() && ok.message.is_empty());
        let no = svc
            .validate(validate(vec![cap(
                true,
                access_mode::Mode::SingleNodeWriter,
            )]))
            .await
            .unwrap();
        assert!(
            no.confirmed.is_none() && no.message.contains("block"),
            "{}",
            no.message
        );
        assert!(matches!(
            svc.validate(validate(vec![])).await,
            Err(Error::Invalid { .. })
        ));
        let mut unknown = validate(vec![cap(false, access_mode::Mode::SingleNodeWriter)]);
        unknown.volume_id = "nope".into();
        assert!(matches!(
            svc.validate(unknown).await,
            Err(Error::NotFound(_))
        ));
    }
}
