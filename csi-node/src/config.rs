//! The command line of `fluid-csi-node`: one config struct, built by clap.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use fluid_proto::Endpoint;
use fluid_proto::identity::check_driver_name;
use fuse_cache::cache::{TierSpec, parse_size};

/// The CSI driver name unless `--drivername` says otherwise (the CSIDriver object's name).
pub const DEFAULT_DRIVER_NAME: &str = "fuse.csi.fluid.io";

/// Longest path of a unix socket (`sun_path` is 108 bytes with the NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// Longest state-dir path: a volume directory name is at most 48 bytes (see `state.rs`) and the
/// control socket `/<vol>/control.sock` must still fit a unix socket path.
pub const MAX_STATE_DIR: usize = MAX_SOCKET_PATH - 1 - 48 - "/control.sock".len();

#[derive(Parser, Debug, Clone)]
#[command(
    name = "fluid-csi-node",
    version,
    about = "CSI Identity and Node plugin of Fluid: runs one fluid-fuse daemon per staged volume \
             (restarting it when it dies), bind-mounts it into pods, and adopts running daemons \
             after its own restart. Runs as root on every node, next to kubelet.",
    long_about = None
)]
pub struct Config {
    /// gRPC endpoint to serve CSI on: unix:///path/to.sock (what kubelet and the
    /// node-driver-registrar dial) or tcp://host:port. A stale socket file is replaced; the
    /// file is removed on shutdown.
    #[arg(long, env = "CSI_ENDPOINT", default_value = "unix:///csi/csi.sock", value_parser = parse_endpoint)]
    pub endpoint: Endpoint,

    /// This node's id as reported by NodeGetInfo (the Kubernetes node name).
    #[arg(long, env = "NODE_ID", value_parser = parse_node_id)]
    pub nodeid: String,

    /// CSI driver name reported by GetPluginInfo; must match the CSIDriver object.
    /// 1-63 characters of [a-zA-Z0-9-_.], alphanumeric at both ends.
    #[arg(long, default_value = DEFAULT_DRIVER_NAME, value_parser = parse_driver_name)]
    pub drivername: String,

    /// Directory of the per-volume state: `<dir>/<volume>/` holds volume.json (the record that
    /// lets a restarted plugin adopt running daemons), the 0600 dataset file with the mount
    /// credentials, the daemon's control socket and its log. Created (0700) if absent; keep it
    /// on the host (hostPath) so it survives a restart of the plugin's container.
    #[arg(long, default_value = "/var/lib/fluid/node", value_parser = parse_state_dir)]
    pub state_dir: PathBuf,

    /// The fluid-fuse executable. Default: `fluid-fuse` next to this executable, else on PATH.
    #[arg(long, value_name = "PATH")]
    pub fuse_binary: Option<PathBuf>,

    /// Node default cache tier, used for volumes whose context has no `fluid.io/tiers`; fastest
    /// first, repeatable: `mem:2GiB`, `ssd:/var/cache/fluid:100GiB,high=0.95,low=0.7`,
    /// `hdd:DIR:SIZE`. Every volume gets its own subdirectory `<DIR>/<volume>` of a disk tier,
    /// with the full quota, so two volumes never share a cache directory.
    #[arg(long = "tier", value_name = "SPEC", default_value = "mem:1GiB", value_parser = parse_tier)]
    pub tiers: Vec<String>,

    /// Node default cache block size (volumes may set `fluid.io/blockSize`).
    #[arg(long, default_value = "4MiB", value_parser = parse_block_size)]
    pub block_size: String,

    /// Most volumes staged on this node at once (NodeGetInfo max_volumes_per_node); 0 means
    /// no limit.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i64).range(0..))]
    pub max_volumes: i64,

    /// How long a fluid-fuse daemon may take to mount before NodeStageVolume fails (it is then
    /// killed and the error carries the end of its log).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub ready_timeout: Duration,
}

impl Config {
    /// The fluid-fuse executable to run: `--fuse-binary`, else `fluid-fuse` beside our own
    /// executable, else the bare name (looked up on PATH when started).
    pub fn fuse_binary(&self) -> PathBuf {
        if let Some(p) = &self.fuse_binary {
            return p.clone();
        }
        std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|d| d.join("fluid-fuse")))
            .filter(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from("fluid-fuse"))
    }
}

fn parse_endpoint(s: &str) -> Result<Endpoint, String> {
    s.parse()
        .map_err(|e: fluid_proto::EndpointError| e.to_string())
}

fn parse_driver_name(s: &str) -> Result<String, String> {
    check_driver_name(s)?;
    Ok(s.to_string())
}

fn parse_node_id(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Err("must not be empty".into());
    }
    Ok(s.to_string())
}

fn parse_state_dir(s: &str) -> Result<PathBuf, String> {
    let p = Path::new(s);
    if !p.is_absolute() {
        return Err(format!("{s:?} must be an absolute path"));
    }
    if s.len() > MAX_STATE_DIR {
        return Err(format!(
            "{s:?} is too long: at most {MAX_STATE_DIR} bytes, so that control sockets under it fit a unix socket path"
        ));
    }
    Ok(p.to_path_buf())
}

fn parse_tier(s: &str) -> Result<String, String> {
    TierSpec::parse(s).map_err(|e| e.to_string())?;
    Ok(s.to_string())
}

fn parse_block_size(s: &str) -> Result<String, String> {
    let n = parse_size(s).map_err(|e| e.to_string())?;
    if !(64 << 10..=64 << 20).contains(&n) {
        return Err("must be between 64KiB and 64MiB".into());
    }
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        Config::command().debug_assert();
    }

    #[test]
    fn defaults_and_validation() {
        let c = Config::try_parse_from(["fluid-csi-node", "--nodeid", "n1"]).unwrap();
        assert_eq!(c.endpoint, Endpoint::Unix("/csi/csi.sock".into()));
        assert_eq!(c.drivername, DEFAULT_DRIVER_NAME);
        assert_eq!(c.tiers, vec!["mem:1GiB".to_string()]);
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/fluid/node"));
        assert_eq!(c.ready_timeout, Duration::from_secs(30));
        assert_eq!(c.max_volumes, 0);

        let c = Config::try_parse_from([
            "fluid-csi-node",
            "--nodeid=n1",
            "--tier=mem:64MiB",
            "--tier=ssd:/var/cache/fluid:10GiB",
            "--block-size=1MiB",
            "--ready-timeout=5s",
        ])
        .unwrap();
        assert_eq!(c.tiers.len(), 2);

        for bad in [
            vec!["--tier=mem:lots"],
            vec!["--block-size=1KiB"],
            vec!["--state-dir=relative"],
            vec!["--drivername=-bad"],
            vec!["--max-volumes=-1"],
            vec!["--endpoint=http://x"],
        ] {
            let mut args = vec!["fluid-csi-node", "--nodeid=n1"];
            args.extend(bad.iter().copied());
            assert!(Config::try_parse_from(&args).is_err(), "{bad:?}");
        }
    }
}
