//! `fluid-csi`: calls CSI plugins the way kubelet and the external-provisioner do, one step
//! per subcommand, so a person (or `make demo`) can walk a volume through its life by hand.
//! `create` prints the volume as JSON; the node steps read it back with `--volume FILE`.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use fluid_proto::Endpoint;
use fluid_proto::csi::controller_client::ControllerClient;
use fluid_proto::csi::node_client::NodeClient;
use fluid_proto::csi::volume_capability::{AccessMode, AccessType, MountVolume, access_mode};
use fluid_proto::csi::*;
use serde::{Deserialize, Serialize};

#[derive(Parser)]
#[command(
    name = "fluid-csi",
    version,
    about = "Drive a CSI plugin step by step, as kubelet would"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// CreateVolume on the controller; prints the volume as JSON.
    Create(CreateArgs),
    /// DeleteVolume on the controller.
    Delete(ControllerVolumeArgs),
    /// NodeStageVolume: start the volume's FUSE daemon at the staging path.
    Stage(StageArgs),
    /// NodePublishVolume: bind the staged volume at a pod's target path.
    Publish(PublishArgs),
    /// NodeUnpublishVolume.
    Unpublish(TargetArgs),
    /// NodeUnstageVolume.
    Unstage(StagingArgs),
    /// NodeGetVolumeStats for a published or staged path; prints JSON.
    Stats(TargetArgs),
}

#[derive(Args)]
struct CreateArgs {
    /// The controller's endpoint.
    #[arg(long)]
    controller: String,
    /// Volume name (the external-provisioner uses pvc-<uid>).
    #[arg(long)]
    name: String,
    /// StorageClass parameter KEY=VALUE, repeatable (dataset, mountPoint, tiers, ...).
    #[arg(long = "param", value_name = "KEY=VALUE")]
    params: Vec<String>,
    /// Requested capacity in bytes.
    #[arg(long, default_value_t = 0)]
    capacity: i64,
}

#[derive(Args)]
struct ControllerVolumeArgs {
    #[arg(long)]
    controller: String,
    #[arg(long)]
    volume_id: String,
}

#[derive(Args)]
struct NodeArgs {
    /// The node plugin's endpoint.
    #[arg(long)]
    node: String,
    /// The volume JSON printed by `create`.
    #[arg(long)]
    volume: PathBuf,
}

#[derive(Args)]
struct StageArgs {
    #[command(flatten)]
    node: NodeArgs,
    #[arg(long)]
    staging_path: PathBuf,
    /// Node-stage secret KEY=VALUE, repeatable (access-key, secret-key, ...).
    #[arg(long = "secret", value_name = "KEY=VALUE")]
    secrets: Vec<String>,
}

#[derive(Args)]
struct PublishArgs {
    #[command(flatten)]
    node: NodeArgs,
    #[arg(long)]
    staging_path: PathBuf,
    #[arg(long)]
    target_path: PathBuf,
    /// Publish read-only.
    #[arg(long)]
    readonly: bool,
}

#[derive(Args)]
struct TargetArgs {
    #[arg(long)]
    node: String,
    #[arg(long)]
    volume_id: String,
    #[arg(long)]
    path: PathBuf,
}

#[derive(Args)]
struct StagingArgs {
    #[arg(long)]
    node: String,
    #[arg(long)]
    volume_id: String,
    #[arg(long)]
    staging_path: PathBuf,
}

/// What `create` prints and the node steps read.
#[derive(Serialize, Deserialize)]
struct VolumeJson {
    volume_id: String,
    capacity_bytes: i64,
    volume_context: HashMap<String, String>,
}

fn pairs(list: &[String], flag: &str) -> Result<HashMap<String, String>> {
    list.iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| {
                    format!(
                        "{flag}: expected KEY=VALUE, got {:?}",
                        kv.split('=').next().unwrap_or("")
                    )
                })
        })
        .collect()
}

fn capability() -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume::default())),
        access_mode: Some(AccessMode {
            mode: access_mode::Mode::MultiNodeReaderOnly as i32,
        }),
    }
}

fn read_volume(path: &PathBuf) -> Result<VolumeJson> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a volume printed by `fluid-csi create`",
            path.display()
        )
    })
}

async fn controller(ep: &str) -> Result<ControllerClient<tonic::transport::Channel>> {
    let ep: Endpoint = ep.parse()?;
    Ok(ControllerClient::new(ep.connect().await?))
}

async fn node(ep: &str) -> Result<NodeClient<tonic::transport::Channel>> {
    let ep: Endpoint = ep.parse()?;
    Ok(NodeClient::new(ep.connect().await?))
}

fn status(e: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", e.code(), e.message())
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Create(a) => {
            let mut parameters = pairs(&a.params, "--param")?;
            parameters
                .entry("csi.storage.k8s.io/pvc/name".into())
                .or_insert_with(|| a.name.clone());
            parameters
                .entry("csi.storage.k8s.io/pvc/namespace".into())
                .or_insert_with(|| "default".into());
            let req = CreateVolumeRequest {
                name: a.name,
                capacity_range: Some(CapacityRange {
                    required_bytes: a.capacity,
                    limit_bytes: 0,
                }),
                volume_capabilities: vec![capability()],
                parameters,
                ..Default::default()
            };
            let vol = controller(&a.controller)
                .await?
                .create_volume(req)
                .await
                .map_err(status)?
                .into_inner()
                .volume;
            let vol = vol.context("CreateVolume returned no volume")?;
            let out = VolumeJson {
                volume_id: vol.volume_id,
                capacity_bytes: vol.capacity_bytes,
                volume_context: vol.volume_context,
            };
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        Cmd::Delete(a) => {
            controller(&a.controller)
                .await?
                .delete_volume(DeleteVolumeRequest {
                    volume_id: a.volume_id,
                    ..Default::default()
                })
                .await
                .map_err(status)?;
        }
        Cmd::Stage(a) => {
            let vol = read_volume(&a.node.volume)?;
            let req = NodeStageVolumeRequest {
                volume_id: vol.volume_id,
                staging_target_path: a.staging_path.display().to_string(),
                volume_capability: Some(capability()),
                secrets: pairs(&a.secrets, "--secret")?,
                volume_context: vol.volume_context,
                ..Default::default()
            };
            node(&a.node.node)
                .await?
                .node_stage_volume(req)
                .await
                .map_err(status)?;
        }
        Cmd::Publish(a) => {
            let vol = read_volume(&a.node.volume)?;
            if let Some(parent) = a.target_path.parent() {
                // kubelet creates the pod's volume directory's parent; the plugin the target.
                std::fs::create_dir_all(parent)?;
            }
            let req = NodePublishVolumeRequest {
                volume_id: vol.volume_id,
                staging_target_path: a.staging_path.display().to_string(),
                target_path: a.target_path.display().to_string(),
                volume_capability: Some(capability()),
                readonly: a.readonly,
                volume_context: vol.volume_context,
                ..Default::default()
            };
            node(&a.node.node)
                .await?
                .node_publish_volume(req)
                .await
                .map_err(status)?;
        }
        Cmd::Unpublish(a) => {
            let req = NodeUnpublishVolumeRequest {
                volume_id: a.volume_id,
                target_path: a.path.display().to_string(),
            };
            node(&a.node)
                .await?
                .node_unpublish_volume(req)
                .await
                .map_err(status)?;
        }
        Cmd::Unstage(a) => {
            let req = NodeUnstageVolumeRequest {
                volume_id: a.volume_id,
                staging_target_path: a.staging_path.display().to_string(),
            };
            node(&a.node)
                .await?
                .node_unstage_volume(req)
                .await
                .map_err(status)?;
        }
        Cmd::Stats(a) => {
            let req = NodeGetVolumeStatsRequest {
                volume_id: a.volume_id,
                volume_path: a.path.display().to_string(),
                staging_target_path: String::new(),
            };
            let resp = node(&a.node)
                .await?
                .node_get_volume_stats(req)
                .await
                .map_err(status)?
                .into_inner();
            let usage: Vec<_> = resp
                .usage
                .iter()
                .map(|u| serde_json::json!({"unit": u.unit, "total": u.total, "used": u.used, "available": u.available}))
                .collect();
            println!("{}", serde_json::json!({ "usage": usage }));
        }
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fluid-csi: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fluid-csi: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
