//! The CSI Controller service: CreateVolume, DeleteVolume, ValidateVolumeCapabilities,
//! ListVolumes and ControllerGetCapabilities. Every other RPC answers UNIMPLEMENTED.
//!
//! A Fluid volume is a dataset: creating one provisions nothing remote, it checks the
//! StorageClass parameters, resolves the Dataset in the PVC's namespace, and records the
//! volume context the node plugin needs to mount it.
//!
//! [`params`] checks the StorageClass parameters, [`capabilities`] the volume capabilities.

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

mod capabilities;
mod params;
#[cfg(test)]
mod tests;

use capabilities::*;
use params::capacity_fits;
pub use params::*;

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
