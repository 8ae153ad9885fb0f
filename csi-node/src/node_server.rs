//! The CSI Node service: NodeStage starts a volume's `fluid-fuse` at the staging path,
//! NodePublish bind-mounts it (or a sub path) at a pod's target, and the Un- calls undo exactly
//! that. Every call is idempotent; calls on one volume are serialised by its lock.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fluid_proto::Endpoint;
use fluid_proto::csi::node_server::Node;
use fluid_proto::csi::node_service_capability::{self, rpc};
use fluid_proto::csi::volume_capability::access_mode::Mode;
use fluid_proto::csi::volume_capability::{AccessMode, AccessType};
use fluid_proto::csi::*;
use fluid_proto::fluid::GetStatsRequest;
use fluid_proto::fluid::cache_node_client::CacheNodeClient;
use fluid_volume::context::{MOUNT_SECRETS, SUB_PATH, VolumeContext, check_sub_path};
use tonic::{Request, Response, Status};

use crate::error::{Error, Result};
use crate::mounts::{self, PathState, run_blocking};
use crate::state::TargetRecord;
use crate::supervisor::{StageRequest, Supervisor, source_path, target_is_live};

/// How long NodeGetVolumeStats waits for a daemon's control service.
const STATS_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct NodeService {
    sup: Arc<Supervisor>,
}

impl NodeService {
    pub fn new(sup: Arc<Supervisor>) -> Self {
        NodeService { sup }
    }
}

fn required<'a>(value: &'a str, field: &'static str) -> Result<&'a str> {
    if value.is_empty() {
        Err(Error::Missing(field))
    } else {
        Ok(value)
    }
}

/// A required absolute path, normalised (CSI paths are absolute host paths).
fn required_path(value: &str, field: &'static str) -> Result<PathBuf> {
    let p = Path::new(required(value, field)?);
    if !p.is_absolute() {
        return Err(Error::invalid(
            field,
            format!("{value:?} is not an absolute path"),
        ));
    }
    Ok(mounts::normalize(p))
}

/// Checks the capability and says whether it only allows reading (a reader-only access mode,
/// or `ro` among the mount flags, as a PV's mountOptions give them).
fn check_capability(cap: Option<&VolumeCapability>) -> Result<bool> {
    let cap = cap.ok_or(Error::Missing("volume_capability"))?;
    let ro_flag = match &cap.access_type {
        Some(AccessType::Mount(m)) => m.mount_flags.iter().any(|f| f == "ro"),
        Some(AccessType::Block(_)) => {
            return Err(Error::invalid(
                "volume_capability.block",
                "block access is not supported: fluid volumes are file systems (use a mount capability)",
            ));
        }
        None => return Err(Error::Missing("volume_capability.access_type")),
    };
    let mode = cap
        .access_mode
        .as_ref()
        .map(AccessMode::mode)
        .ok_or(Error::Missing("volume_capability.access_mode"))?;
    match mode {
        Mode::Unknown => Err(Error::invalid(
            "volume_capability.access_mode",
            "the access mode is UNKNOWN",
        )),
        Mode::SingleNodeReaderOnly | Mode::MultiNodeReaderOnly => Ok(true),
        _ => Ok(ro_flag),
    }
}

/// Replaces every secret value in a message (daemon logs are meant to hold none; this makes
/// sure an error never carries one either), also each value inside the per-mount JSON of
/// [`MOUNT_SECRETS`], which the kubelet passes as one string.
fn redact(mut msg: String, secrets: &HashMap<String, String>) -> String {
    let mut values: Vec<&str> = Vec::new();
    let mut nested: Vec<Vec<std::collections::BTreeMap<String, String>>> = Vec::new();
    for (k, v) in secrets {
        values.push(v);
        if k == MOUNT_SECRETS
            && let Ok(per_mount) = serde_json::from_str(v)
        {
            nested.push(per_mount);
        }
    }
    values.extend(
        nested
            .iter()
            .flatten()
            .flat_map(|m| m.values().map(String::as_str)),
    );
    // Longest first, so a value that holds a shorter one is replaced whole.
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    for v in values {
        if v.len() >= 3 {
            msg = msg.replace(v, "<redacted>");
        }
    }
    msg
}

impl NodeService {
    async fn stage(&self, req: NodeStageVolumeRequest) -> Result<()> {
        let id = required(&req.volume_id, "volume_id")?;
        let staging = required_path(&req.staging_target_path, "staging_target_path")?;
        check_capability(req.volume_capability.as_ref())?;
        let context = VolumeContext::from_map(&req.volume_context)?;
        crate::policy::check_volume(&context, &req.secrets, self.sup.config())?;
        self.sup
            .stage(StageRequest {
                volume_id: id,
                staging: &staging,
                context: &context,
                secrets: &req.secrets,
            })
            .await
            .map_err(|e| redact_error(e, &req.secrets))
    }

    async fn unstage(&self, req: NodeUnstageVolumeRequest) -> Result<()> {
        let id = required(&req.volume_id, "volume_id")?.to_string();
        let staging = required_path(&req.staging_target_path, "staging_target_path")?;
        let slot = self.sup.slot(&id);
        let mut guard = slot.lock().await;
        match guard.as_mut() {
            Some(vol) if vol.record.parked => Ok(()),
            Some(vol) if vol.record.staging_path == staging && vol.record.keep => {
                self.sup.park(vol).await?;
                tracing::info!(volume = %id, pid = vol.record.pid, "unstaged from {}; its fluid-fuse stays until the Dataset's runtime is deleted (cleanPolicy OnRuntimeDeleted)", staging.display());
                Ok(())
            }
            Some(vol) if vol.record.staging_path == staging => {
                // The CO unpublishes first (the spec makes it guarantee that); targets left
                // over anyway are unmounted rather than left pointing at a stopped daemon.
                self.sup.teardown(vol).await?;
                tracing::info!(volume = %id, "unstaged from {}", staging.display());
                *guard = None;
                Ok(())
            }
            Some(vol) => {
                tracing::warn!(
                    volume = %id,
                    "NodeUnstageVolume for {} but the volume is staged at {}; nothing to do",
                    staging.display(),
                    vol.record.staging_path.display()
                );
                Ok(())
            }
            None => {
                // Unknown here: already unstaged, or state lost. A fluid mount left at the
                // path is still ours to remove.
                let st = staging.clone();
                run_blocking("unmounting the staging path", move || {
                    if mounts::mount_at(&st)?.is_some_and(|m| m.is_fluid()) {
                        mounts::unmount_all(&st)?;
                    }
                    Ok(())
                })
                .await
            }
        }
    }

    async fn publish(&self, req: NodePublishVolumeRequest) -> Result<()> {
        let id = required(&req.volume_id, "volume_id")?.to_string();
        let target = required_path(&req.target_path, "target_path")?;
        let cap_read_only = check_capability(req.volume_capability.as_ref())?;
        if req.staging_target_path.is_empty() {
            return Err(Error::FailedPrecondition(
                "staging_target_path is required: this plugin stages volumes (STAGE_UNSTAGE_VOLUME)".into(),
            ));
        }
        let staging = required_path(&req.staging_target_path, "staging_target_path")?;
        let read_only = req.readonly || cap_read_only;
        let sub_path = req
            .volume_context
            .get(SUB_PATH)
            .filter(|s| !s.is_empty())
            .cloned();
        if let Some(s) = &sub_path {
            check_sub_path(s)?;
        }
        let wanted = TargetRecord {
            read_only,
            sub_path,
        };

        let not_staged =
            || Error::FailedPrecondition(format!("volume {id} is not staged on this node"));
        let slot = self.sup.existing_slot(&id).ok_or_else(not_staged)?;
        let mut guard = slot.lock().await;
        let vol = guard
            .as_mut()
            .filter(|v| !v.record.parked)
            .ok_or_else(not_staged)?;
        if vol.record.staging_path != staging {
            return Err(Error::FailedPrecondition(format!(
                "volume {id} is staged at {}, not at {}",
                vol.record.staging_path.display(),
                staging.display()
            )));
        }
        if let Some(existing) = vol.record.targets.get(&target) {
            if *existing != wanted {
                return Err(Error::AlreadyExists(format!(
                    "volume {id} is already published at {} with read_only={} sub_path={:?}",
                    target.display(),
                    existing.read_only,
                    existing.sub_path
                )));
            }
            if !vol.running {
                return Err(Error::Unavailable(format!(
                    "volume {id}: fluid-fuse is being restarted; retry"
                )));
            }
            // Published already: make sure the mount is really there.
            let (stg, tg) = (staging.clone(), target.clone());
            if !run_blocking("checking the target", move || target_is_live(&stg, &tg)).await? {
                tracing::warn!(volume = %id, "target {} lost its mount; binding it again", target.display());
                self.bind_target(&staging, &target, &wanted).await?;
            }
            return Ok(());
        }
        if !vol.running {
            return Err(Error::Unavailable(format!(
                "volume {id}: fluid-fuse is being restarted; retry"
            )));
        }
        self.sup.reserve_target(&id, &target)?;
        let result = async {
            self.bind_target(&staging, &target, &wanted).await?;
            vol.record.targets.insert(target.clone(), wanted.clone());
            if let Err(e) = self.sup.state().save(&vol.record) {
                vol.record.targets.remove(&target);
                let t = target.clone();
                let _ = run_blocking("undoing a bind mount", move || mounts::unmount_all(&t)).await;
                return Err(e);
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => {
                tracing::info!(
                    volume = %id,
                    read_only,
                    sub_path = wanted.sub_path.as_deref().unwrap_or(""),
                    "published at {}",
                    target.display()
                );
                Ok(())
            }
            Err(e) => {
                self.sup.release_target(&id, &target);
                Err(e)
            }
        }
    }

    /// Creates the target folder if needed and binds the staging path (or sub path) there.
    async fn bind_target(&self, staging: &Path, target: &Path, t: &TargetRecord) -> Result<()> {
        let src = source_path(staging, t.sub_path.as_deref());
        let (tg, read_only, sub) = (target.to_path_buf(), t.read_only, t.sub_path.clone());
        run_blocking("bind-mounting the target", move || {
            match mounts::probe(&src) {
                PathState::Directory => {}
                PathState::Missing => {
                    return Err(Error::NotFound(format!(
                        "subPath {:?} does not exist in the volume",
                        sub.unwrap_or_default()
                    )));
                }
                PathState::Other => {
                    return Err(Error::invalid(
                        "subPath",
                        format!("{:?} is not a directory", sub.unwrap_or_default()),
                    ));
                }
                PathState::Dead => {
                    return Err(Error::Unavailable(
                        "the volume's fluid-fuse is not answering; retry".into(),
                    ));
                }
                PathState::Error(_, msg) => {
                    return Err(Error::Daemon(format!("{}: {msg}", src.display())));
                }
            }
            // A stale fluid bind (dead, or of an earlier daemon) goes; anything else there is
            // not ours to cover.
            if let Some(m) = mounts::mount_at(&tg)? {
                if !m.is_fluid() {
                    return Err(Error::AlreadyExists(format!(
                        "target_path {} is already a mount point ({} from {})",
                        tg.display(),
                        m.fs_type,
                        m.source
                    )));
                }
                mounts::detach_all(&tg)?;
            }
            match mounts::probe(&tg) {
                PathState::Directory => {}
                PathState::Missing => std::fs::create_dir_all(&tg)
                    .map_err(|e| Error::io(format!("creating {}", tg.display()), e))?,
                PathState::Other => {
                    return Err(Error::invalid(
                        "target_path",
                        format!("{} exists and is not a directory", tg.display()),
                    ));
                }
                other => {
                    return Err(Error::FailedPrecondition(format!(
                        "target_path {} cannot be used: {other:?}",
                        tg.display()
                    )));
                }
            }
            mounts::bind(&src, &tg, read_only)
        })
        .await
    }

    async fn unpublish(&self, req: NodeUnpublishVolumeRequest) -> Result<()> {
        let id = required(&req.volume_id, "volume_id")?.to_string();
        let target = required_path(&req.target_path, "target_path")?;
        let slot = self.sup.existing_slot(&id);
        let mut guard = match &slot {
            Some(s) => Some(s.lock().await),
            None => None,
        };
        let known = guard
            .as_mut()
            .and_then(|g| g.as_mut())
            .filter(|v| v.record.targets.contains_key(&target));
        let tg = target.clone();
        let ours = known.is_some();
        run_blocking("unmounting the target", move || {
            match mounts::mount_at(&tg)? {
                Some(m) if !ours && !m.is_fluid() => {
                    // Not published by us and not a fluid mount: leave it alone.
                    tracing::warn!(
                        "NodeUnpublishVolume: {} is a {} mount that is not ours; leaving it",
                        tg.display(),
                        m.fs_type
                    );
                    return Ok(());
                }
                Some(_) => mounts::unmount_all(&tg)?,
                None => {}
            }
            mounts::remove_target(&tg)
        })
        .await?;
        if let Some(vol) = known {
            vol.record.targets.remove(&target);
            self.sup.state().save(&vol.record)?;
            self.sup.release_target(&id, &target);
            tracing::info!(volume = %id, "unpublished {}", target.display());
        }
        Ok(())
    }

    async fn volume_stats(
        &self,
        req: NodeGetVolumeStatsRequest,
    ) -> Result<NodeGetVolumeStatsResponse> {
        let id = required(&req.volume_id, "volume_id")?.to_string();
        let path = required(&req.volume_path, "volume_path")?;
        let not_found = || Error::NotFound(format!("volume {id} is not staged on this node"));
        let slot = self.sup.existing_slot(&id).ok_or_else(not_found)?;
        let control = {
            let guard = slot.lock().await;
            let vol = guard
                .as_ref()
                .filter(|v| !v.record.parked)
                .ok_or_else(not_found)?;
            let p = Path::new(path);
            let p = p.is_absolute().then(|| mounts::normalize(p));
            let known = p.as_ref().is_some_and(|p| {
                *p == vol.record.staging_path || vol.record.targets.contains_key(p)
            });
            if !known {
                return Err(Error::NotFound(format!(
                    "{path} is neither the staging path nor a target of volume {id}"
                )));
            }
            if !vol.running {
                return Err(Error::Unavailable(format!(
                    "volume {id}: fluid-fuse is being restarted; retry"
                )));
            }
            vol.record.control_socket.clone()
        };
        let stats = tokio::time::timeout(STATS_TIMEOUT, async {
            let channel = Endpoint::Unix(control)
                .connect()
                .await
                .map_err(|e| Error::Unavailable(format!("volume {id}: {e}")))?;
            CacheNodeClient::new(channel)
                .get_stats(GetStatsRequest::default())
                .await
                .map(|r| r.into_inner())
                .map_err(|s| {
                    Error::Unavailable(format!("volume {id}: cache stats: {}", s.message()))
                })
        })
        .await
        .map_err(|_| {
            Error::Unavailable(format!(
                "volume {id}: no cache stats within {STATS_TIMEOUT:?}"
            ))
        })??;
        let total: u64 = stats.tiers.iter().map(|t| t.capacity_bytes).sum();
        let used: u64 = stats.tiers.iter().map(|t| t.used_bytes).sum();
        let clamp = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        Ok(NodeGetVolumeStatsResponse {
            usage: vec![VolumeUsage {
                available: clamp(total.saturating_sub(used)),
                total: clamp(total),
                used: clamp(used),
                unit: volume_usage::Unit::Bytes as i32,
            }],
            volume_condition: None,
        })
    }
}

fn redact_error(e: Error, secrets: &HashMap<String, String>) -> Error {
    match e {
        Error::Daemon(msg) => Error::Daemon(redact(msg, secrets)),
        other => other,
    }
}

fn capability(t: rpc::Type) -> NodeServiceCapability {
    NodeServiceCapability {
        r#type: Some(node_service_capability::Type::Rpc(
            node_service_capability::Rpc { r#type: t as i32 },
        )),
    }
}

#[tonic::async_trait]
impl Node for NodeService {
    async fn node_stage_volume(
        &self,
        request: Request<NodeStageVolumeRequest>,
    ) -> Result<Response<NodeStageVolumeResponse>, Status> {
        self.stage(request.into_inner())
            .await
            .map_err(log_status("NodeStageVolume"))?;
        Ok(Response::new(NodeStageVolumeResponse {}))
    }

    async fn node_unstage_volume(
        &self,
        request: Request<NodeUnstageVolumeRequest>,
    ) -> Result<Response<NodeUnstageVolumeResponse>, Status> {
        self.unstage(request.into_inner())
            .await
            .map_err(log_status("NodeUnstageVolume"))?;
        Ok(Response::new(NodeUnstageVolumeResponse {}))
    }

    async fn node_publish_volume(
        &self,
        request: Request<NodePublishVolumeRequest>,
    ) -> Result<Response<NodePublishVolumeResponse>, Status> {
        self.publish(request.into_inner())
            .await
            .map_err(log_status("NodePublishVolume"))?;
        Ok(Response::new(NodePublishVolumeResponse {}))
    }

    async fn node_unpublish_volume(
        &self,
        request: Request<NodeUnpublishVolumeRequest>,
    ) -> Result<Response<NodeUnpublishVolumeResponse>, Status> {
        self.unpublish(request.into_inner())
            .await
            .map_err(log_status("NodeUnpublishVolume"))?;
        Ok(Response::new(NodeUnpublishVolumeResponse {}))
    }

    async fn node_get_volume_stats(
        &self,
        request: Request<NodeGetVolumeStatsRequest>,
    ) -> Result<Response<NodeGetVolumeStatsResponse>, Status> {
        let r = self
            .volume_stats(request.into_inner())
            .await
            .map_err(log_status("NodeGetVolumeStats"))?;
        Ok(Response::new(r))
    }

    async fn node_expand_volume(
        &self,
        _: Request<NodeExpandVolumeRequest>,
    ) -> Result<Response<NodeExpandVolumeResponse>, Status> {
        Err(Error::Unimplemented("NodeExpandVolume").into())
    }

    async fn node_get_capabilities(
        &self,
        _: Request<NodeGetCapabilitiesRequest>,
    ) -> Result<Response<NodeGetCapabilitiesResponse>, Status> {
        Ok(Response::new(NodeGetCapabilitiesResponse {
            capabilities: vec![
                capability(rpc::Type::StageUnstageVolume),
                capability(rpc::Type::GetVolumeStats),
            ],
        }))
    }

    async fn node_get_info(
        &self,
        _: Request<NodeGetInfoRequest>,
    ) -> Result<Response<NodeGetInfoResponse>, Status> {
        let cfg = self.sup.config();
        Ok(Response::new(NodeGetInfoResponse {
            node_id: cfg.nodeid.clone(),
            max_volumes_per_node: cfg.max_volumes,
            accessible_topology: None,
        }))
    }
}

/// Logs a failed call (the message never holds secrets) and turns it into its status.
fn log_status(call: &'static str) -> impl Fn(Error) -> Status {
    move |e| {
        match &e {
            Error::Missing(_)
            | Error::Invalid { .. }
            | Error::NotFound(_)
            | Error::AlreadyExists(_)
            | Error::FailedPrecondition(_)
            | Error::Unavailable(_) => tracing::info!("{call}: {e}"),
            _ => tracing::error!("{call}: {e}"),
        }
        Status::from(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fluid_proto::csi::volume_capability::{BlockVolume, MountVolume};

    fn cap(access: Option<AccessType>, mode: Option<Mode>) -> VolumeCapability {
        VolumeCapability {
            access_type: access,
            access_mode: mode.map(|m| AccessMode { mode: m as i32 }),
        }
    }

    #[test]
    fn capabilities() {
        let mount = || Some(AccessType::Mount(MountVolume::default()));
        assert!(!check_capability(Some(&cap(mount(), Some(Mode::SingleNodeWriter)))).unwrap());
        assert!(check_capability(Some(&cap(mount(), Some(Mode::MultiNodeReaderOnly)))).unwrap());
        assert!(check_capability(Some(&cap(mount(), Some(Mode::SingleNodeReaderOnly)))).unwrap());
        let ro_flag = Some(AccessType::Mount(MountVolume {
            mount_flags: vec!["ro".into()],
            ..Default::default()
        }));
        assert!(check_capability(Some(&cap(ro_flag, Some(Mode::SingleNodeWriter)))).unwrap());
        let block = cap(
            Some(AccessType::Block(BlockVolume {})),
            Some(Mode::SingleNodeWriter),
        );
        assert!(
            check_capability(Some(&block))
                .unwrap_err()
                .to_string()
                .contains("block")
        );
        assert!(matches!(
            check_capability(None),
            Err(Error::Missing("volume_capability"))
        ));
        assert!(check_capability(Some(&cap(None, Some(Mode::SingleNodeWriter)))).is_err());
        assert!(check_capability(Some(&cap(mount(), None))).is_err());
    }

    #[test]
    fn paths_and_redaction() {
        assert!(matches!(
            required_path("", "target_path"),
            Err(Error::Missing("target_path"))
        ));
        assert!(required_path("rel/x", "target_path").is_err());
        assert_eq!(required_path("/a/b/", "t").unwrap(), PathBuf::from("/a/b"));
        let secrets = HashMap::from([("secret-key".to_string(), "hunter22".to_string())]);
        assert_eq!(
            redact("key hunter22 bad".into(), &secrets),
            "key <redacted> bad"
        );
        // The Dataset reconciler's Secret: one key, a JSON list of each mount's options.
        let per_mount = r#"[{"access-key":"AKIAEXAMPLE","secret-key":"s3cr3t/with+chars"}]"#;
        let secrets = HashMap::from([(MOUNT_SECRETS.to_string(), per_mount.to_string())]);
        let shown = redact(
            "403 for AKIAEXAMPLE signing with s3cr3t/with+chars".into(),
            &secrets,
        );
        assert_eq!(shown, "403 for <redacted> signing with <redacted>");
    }
}
