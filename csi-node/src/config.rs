//! The command line of `fluid-csi-node`: one config struct, built by clap.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use fluid_proto::Endpoint;
use fluid_proto::identity::check_driver_name;
use fluid_volume::size::BlockSize;
use fluid_volume::tier::{TierSpec, Tiers};

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
    tier_specs: Vec<TierSpec>,

    /// The tiers of --tier, checked as a list (memory first, no folder twice) by
    /// [`Config::try_from_args`].
    #[arg(skip)]
    pub tiers: Tiers,

    /// Node default cache block size, 64KiB to 64MiB (volumes may set `fluid.io/blockSize`).
    #[arg(long, default_value_t = BlockSize::DEFAULT, value_parser = BlockSize::from_flag)]
    pub block_size: BlockSize,

    /// Most volumes staged on this node at once (NodeGetInfo max_volumes_per_node); 0 means
    /// no limit.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i64).range(0..))]
    pub max_volumes: i64,

    /// How long a fluid-fuse daemon may take to mount before NodeStageVolume fails (it is then
    /// killed and the error carries the end of its log).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub ready_timeout: Duration,

    /// Run against the Kubernetes API: label this node's Node object (named by --nodeid, which
    /// the chart fills from the downward API spec.nodeName) `fluid.io/s-<namespace>-<dataset>=true`
    /// while a volume of that Dataset is staged here, remove such labels no staged volume
    /// justifies, and annotate the Node with --cache-advertise. Uses the in-cluster service
    /// account (or KUBECONFIG); needs get and patch on nodes. Label updates never fail a CSI
    /// call: they are retried in the background. FLUID_KUBERNETES takes true/false, 1/0,
    /// yes/no or on/off.
    #[arg(long, env = "FLUID_KUBERNETES", value_parser = clap::builder::BoolishValueParser::new())]
    pub kubernetes: bool,

    /// Serve the cache service fluid.v1.CacheNode for the controller on tcp://HOST:PORT (plain
    /// gRPC, no authentication: keep it to the cluster network, e.g. with a NetworkPolicy).
    /// Every request names a Dataset ("namespace/name"); it goes to the fluid-fuse daemons of
    /// that Dataset's volumes staged here (GetStats and Evict sum their answers).
    #[arg(long, value_name = "tcp://HOST:PORT", value_parser = parse_cache_endpoint)]
    pub cache_endpoint: Option<Endpoint>,

    /// HOST:PORT at which the controller reaches --cache-endpoint, written to the Node
    /// annotation fluid.io/cache-endpoint (with --kubernetes). Default: the address
    /// --cache-endpoint is bound to; required when that is 0.0.0.0 or [::] (give the pod IP,
    /// e.g. from the downward API status.podIP).
    #[arg(long, env = "FLUID_CACHE_ADVERTISE", value_name = "HOST:PORT", value_parser = parse_host_port)]
    pub cache_advertise: Option<String>,

    /// Shared token that every call to --cache-endpoint must carry (`authorization: Bearer
    /// <token>`; the controller sends it from the same variable). Without it the endpoint is
    /// open to whoever reaches the port. 16 printable characters or more.
    #[arg(long, env = fluid_proto::cache_auth::TOKEN_ENV, hide_env_values = true, value_name = "TOKEN", value_parser = fluid_proto::cache_auth::parse_token)]
    pub cache_token: Option<fluid_proto::cache_auth::Token>,

    /// Answer the kubelet's liveness probe: `GET /healthz` on HOST:PORT is 200 while this
    /// plugin's CSI endpoint answers Probe (no livenessprobe sidecar needed).
    #[arg(long, value_name = "HOST:PORT")]
    pub health_listen: Option<SocketAddr>,

    /// Directories (absolute, comma separated) under which a volume's `local://` mount points
    /// may lie. A local:// volume is served by a root daemon that shows the node's own files to
    /// the tenant's pods, so none is allowed by default: such volumes are refused at NodeStage
    /// with PERMISSION_DENIED. Symlinks are resolved before the check.
    #[arg(long, env = "FLUID_LOCAL_ROOTS", value_name = "DIR,...", value_delimiter = ',', value_parser = parse_absolute)]
    pub local_roots: Vec<PathBuf>,

    /// With --kubernetes: endpoints (comma separated: `*`, or `[http(s)://]HOST[:PORT]`, HOST
    /// may start with `*.`) to which a volume's credentials from its node-stage Secret may be
    /// sent. The access key id and session token travel to the endpoint, and a Dataset's
    /// `endpoint` option is its author's choice, so one neither listed nor set by the Secret
    /// itself is refused at NodeStage with PERMISSION_DENIED. Default: none (only the store's
    /// own endpoints, e.g. AWS by region). Without --kubernetes volume contexts come from the
    /// administrator's catalogue and StorageClasses, and nothing is checked.
    #[arg(long, env = "FLUID_CREDENTIAL_ENDPOINTS", value_name = "ENDPOINT,...", value_delimiter = ',', value_parser = fluid_volume::endpoints::pattern_flag)]
    pub credential_endpoints: Vec<fluid_volume::endpoints::EndpointPattern>,

    /// More directories (absolute, comma separated) under which a volume's own disk tiers
    /// (a CacheRuntime's or StorageClass's `ssd:`/`hdd:` paths) may lie, besides the folders of
    /// this node's `--tier` flags. Tier folders are made, filled and removed by root, so one
    /// elsewhere (or with `..`) is refused at NodeStage with PERMISSION_DENIED.
    #[arg(long, env = "FLUID_CACHE_ROOTS", value_name = "DIR,...", value_delimiter = ',', value_parser = parse_absolute)]
    pub cache_roots: Vec<PathBuf>,

    /// The most memory the mem tiers of all volumes on this node may hold together (e.g.
    /// `16GiB`); a volume that would pass it is refused at NodeStage with RESOURCE_EXHAUSTED.
    /// With `--daemon-cgroup`, it (plus 1 GiB for the daemons themselves) is also that cgroup's
    /// `memory.max`.
    /// Default: no limit.
    #[arg(long, env = "FLUID_MEM_BUDGET", value_name = "SIZE", value_parser = fluid_volume::size::size_flag)]
    pub mem_budget: Option<u64>,

    /// The most disk space the disk tiers of all volumes on this node may hold together (e.g.
    /// `500GiB`); a volume that would pass it is refused at NodeStage with RESOURCE_EXHAUSTED.
    /// Default: no limit.
    #[arg(long, env = "FLUID_DISK_BUDGET", value_name = "SIZE", value_parser = fluid_volume::size::size_flag)]
    pub disk_budget: Option<u64>,

    /// HDFS users (comma separated) a volume may act as through its `user` option; `*` allows
    /// any. The namenode believes any name with simple authentication, so a volume naming
    /// another is refused at NodeStage with PERMISSION_DENIED. Default: none.
    #[arg(
        long,
        env = "FLUID_HDFS_USERS",
        value_name = "USER,...",
        value_delimiter = ','
    )]
    pub hdfs_users: Vec<String>,

    /// Let S3/OSS volumes without keys use this node's own cloud identity (the AWS default
    /// chain: environment, credentials files, web identity, instance role). Off, such volumes
    /// are refused at NodeStage with PERMISSION_DENIED: a tenant could otherwise read any
    /// bucket the node can.
    #[arg(long, env = "FLUID_ALLOW_AMBIENT_CREDENTIALS")]
    pub allow_ambient_credentials: bool,

    /// Register the driver with the kubelet by serving its plugin registration API
    /// (pluginregistration/v1) on `<DIR>/<drivername>-reg.sock`; the kubelet watches this
    /// folder (`/var/lib/kubelet/plugins_registry`) and then lists the driver in the Node's
    /// CSINode. No node-driver-registrar sidecar is needed.
    #[arg(long, value_name = "DIR", value_parser = parse_absolute)]
    pub registration_dir: Option<PathBuf>,

    /// The CSI socket as the kubelet sees it, a path on the host, sent to the kubelet at
    /// registration. Default: the --endpoint path, right when this plugin sees host paths
    /// unchanged; in a container that mounts the socket's folder elsewhere give the host path
    /// (e.g. /var/lib/kubelet/plugins/fuse.csi.fluid.io/csi.sock).
    #[arg(long, value_name = "PATH", requires = "registration_dir", value_parser = parse_absolute)]
    pub kubelet_registration_path: Option<PathBuf>,

    /// Move every fluid-fuse daemon into the cgroup NAME under the root of each of the host's
    /// cgroup hierarchies (seen at --host-cgroup-root), so that the daemons and the FUSE
    /// mounts of running pods outlive this plugin's container (a rollout, an upgrade, a
    /// crash); the next plugin adopts them. Needs the host's PID namespace (hostPID: true,
    /// which the chart sets). Without it, or when a move fails, the daemons stay in the
    /// plugin's cgroup and end with its pod (a warning says so).
    #[arg(long, value_name = "NAME")]
    pub daemon_cgroup: Option<String>,

    /// Where the host's cgroup hierarchies are mounted in this plugin's view, for
    /// --daemon-cgroup: the host's /sys/fs/cgroup, which the chart mounts at
    /// /host/sys/fs/cgroup (a container's own /sys/fs/cgroup shows only its own cgroup).
    #[arg(long, value_name = "DIR", default_value = "/sys/fs/cgroup", value_parser = parse_absolute)]
    pub host_cgroup_root: PathBuf,
}

impl Config {
    /// The registration socket and the CSI socket path the kubelet is told, when registering
    /// with the kubelet (`--registration-dir`).
    pub fn registration(&self) -> Result<Option<(PathBuf, PathBuf)>, String> {
        let Some(dir) = &self.registration_dir else {
            return Ok(None);
        };
        let socket = dir.join(format!("{}-reg.sock", self.drivername));
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(format!(
                "--registration-dir: {} is longer than a unix socket path may be",
                socket.display()
            ));
        }
        let csi = match (&self.kubelet_registration_path, &self.endpoint) {
            (Some(path), _) => path.clone(),
            (None, Endpoint::Unix(path)) => path.clone(),
            (None, Endpoint::Tcp(_)) => {
                return Err(
                    "--registration-dir: the kubelet dials CSI on a unix socket; serve --endpoint on unix:// or give --kubelet-registration-path".into(),
                );
            }
        };
        Ok(Some((socket, csi)))
    }

    /// Parses a command line and checks what clap cannot see flag by flag: the --tier list as
    /// a whole.
    pub fn try_from_args<I, T>(args: I) -> Result<Config, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let mut cfg = Config::try_parse_from(args)?;
        let invalid = |message: String| {
            <Config as clap::CommandFactory>::command()
                .error(clap::error::ErrorKind::ValueValidation, message)
        };
        cfg.registration().map_err(invalid)?;
        cfg.check_cache_token().map_err(invalid)?;
        cfg.tiers = Tiers::new(cfg.tier_specs.clone()).map_err(|e| {
            <Config as clap::CommandFactory>::command().error(
                clap::error::ErrorKind::ValueValidation,
                format!("--tier: {e}"),
            )
        })?;
        Ok(cfg)
    }

    /// A cache endpoint other hosts can reach (any address but loopback) evicts, warms up and
    /// reports the cache of every volume on the node: in a cluster it takes calls with the
    /// shared token only, so one must be given.
    fn check_cache_token(&self) -> Result<(), String> {
        match (&self.cache_endpoint, &self.cache_token) {
            (Some(Endpoint::Tcp(addr)), None) if self.kubernetes && !addr.ip().is_loopback() => {
                Err(format!(
                    "--cache-endpoint tcp://{addr} is reachable from other hosts: give the token \
                     the controller sends (--cache-token or {}; the chart makes one)",
                    fluid_proto::cache_auth::TOKEN_ENV
                ))
            }
            _ => Ok(()),
        }
    }

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

impl Config {
    /// Where volumes' disk tiers may lie: `--cache-roots` and the folders of `--tier`.
    pub fn cache_roots(&self) -> Vec<PathBuf> {
        let mut roots = self.cache_roots.clone();
        roots.extend(self.tiers.disk_dirs());
        roots
    }

    /// What to write to the Node's cache-endpoint annotation, given the address the cache
    /// endpoint is bound to: --cache-advertise, else that address unless it is a wildcard one
    /// (the controller cannot dial 0.0.0.0).
    pub fn cache_advertise(&self, bound: SocketAddr) -> Result<String, String> {
        if let Some(a) = &self.cache_advertise {
            return Ok(a.clone());
        }
        if bound.ip().is_unspecified() {
            return Err(format!(
                "--cache-advertise (or FLUID_CACHE_ADVERTISE) is required: --cache-endpoint \
                 listens on {bound}, an address the controller cannot dial; give this node's \
                 address, e.g. the pod IP from the downward API"
            ));
        }
        Ok(bound.to_string())
    }
}

fn parse_cache_endpoint(s: &str) -> Result<Endpoint, String> {
    match parse_endpoint(s)? {
        Endpoint::Unix(_) => Err(format!(
            "{s:?}: the cache endpoint is dialed from other nodes; give tcp://HOST:PORT"
        )),
        tcp => Ok(tcp),
    }
}

/// `HOST:PORT` with a numeric port; an IPv6 host in brackets (`[fd00::1]:9600`), or without
/// them as `$(POD_IP):PORT` gives it on an IPv6 cluster (`fd00::1:9600`), then bracketed here.
fn parse_host_port(s: &str) -> Result<String, String> {
    let bad = |why: &str| {
        Err(format!(
            "{s:?} {why}: expected HOST:PORT, e.g. 10.0.0.7:9600"
        ))
    };
    if s.contains("://") || s.contains('/') {
        return bad("has a scheme or path");
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return bad("has no port");
    };
    if port.parse::<u16>().map_or(true, |p| p == 0) {
        return bad("has no valid port");
    }
    if host.parse::<std::net::Ipv6Addr>().is_ok() {
        return Ok(format!("[{host}]:{port}"));
    }
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
    let host_ok = match bare {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'))
        }
    };
    if !host_ok {
        return bad("has no valid host");
    }
    Ok(s.to_string())
}

fn parse_absolute(s: &str) -> Result<PathBuf, String> {
    let p = Path::new(s);
    if !p.is_absolute() {
        return Err(format!("{s:?} must be an absolute path"));
    }
    Ok(p.to_path_buf())
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
    let p = parse_absolute(s)?;
    if s.len() > MAX_STATE_DIR {
        return Err(format!(
            "{s:?} is too long: at most {MAX_STATE_DIR} bytes, so that control sockets under it fit a unix socket path"
        ));
    }
    Ok(p)
}

fn parse_tier(s: &str) -> Result<TierSpec, String> {
    TierSpec::parse(s).map_err(|e| e.to_string())
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
        let c = Config::try_from_args(["fluid-csi-node", "--nodeid", "n1"]).unwrap();
        assert_eq!(c.endpoint, Endpoint::Unix("/csi/csi.sock".into()));
        assert_eq!(c.drivername, DEFAULT_DRIVER_NAME);
        assert_eq!(c.tiers.to_string(), "mem:1GiB");
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/fluid/node"));
        assert_eq!(c.ready_timeout, Duration::from_secs(30));
        assert_eq!(c.max_volumes, 0);
        assert!(!c.kubernetes && c.cache_endpoint.is_none() && c.cache_advertise.is_none());

        let c = Config::try_from_args([
            "fluid-csi-node",
            "--nodeid=n1",
            "--tier=mem:64MiB",
            "--tier=ssd:/var/cache/fluid:10GiB",
            "--block-size=1MiB",
            "--ready-timeout=5s",
        ])
        .unwrap();
        assert_eq!(c.tiers.specs().len(), 2);
        assert_eq!(c.block_size.bytes(), 1 << 20);

        let c = Config::try_from_args([
            "fluid-csi-node",
            "--nodeid=n1",
            "--kubernetes",
            "--cache-endpoint=tcp://127.0.0.1:9600",
            "--cache-advertise=[fd00::1]:9600",
        ])
        .unwrap();
        assert!(c.kubernetes);
        assert_eq!(
            c.cache_endpoint,
            Some(Endpoint::Tcp("127.0.0.1:9600".parse().unwrap()))
        );
        assert_eq!(c.cache_advertise.as_deref(), Some("[fd00::1]:9600"));
        for ok in ["node-1.example.com:80", "10.0.0.7:9600"] {
            assert_eq!(parse_host_port(ok).as_deref(), Ok(ok));
        }

        for bad in [
            vec!["--tier=mem:lots"],
            vec!["--block-size=1KiB"],
            vec!["--block-size=128MiB"],
            vec!["--tier=ssd:/c:1GiB", "--tier=mem:1GiB"],
            vec!["--tier=ssd:/c:1GiB", "--tier=hdd:/c/:2GiB"],
            vec!["--state-dir=relative"],
            vec!["--drivername=-bad"],
            vec!["--max-volumes=-1"],
            vec!["--endpoint=http://x"],
            vec!["--cache-endpoint=unix:///run/cache.sock"],
            vec!["--cache-advertise=http://10.0.0.1:9600"],
            vec!["--cache-advertise=10.0.0.1"],
            vec!["--cache-advertise=10.0.0.1:0"],
            vec!["--cache-advertise=:9600"],
            vec!["--cache-advertise=fd00::1"],
        ] {
            let mut args = vec!["fluid-csi-node", "--nodeid=n1"];
            args.extend(bad.iter().copied());
            assert!(Config::try_from_args(&args).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn kubelet_registration() {
        let parse = |extra: &[&str]| {
            let mut args = vec!["fluid-csi-node", "--nodeid=n1"];
            args.extend(extra);
            Config::try_from_args(&args)
        };
        assert_eq!(parse(&[]).unwrap().registration().unwrap(), None);
        let c = parse(&["--registration-dir=/var/lib/kubelet/plugins_registry"]).unwrap();
        assert_eq!(
            c.registration().unwrap(),
            Some((
                PathBuf::from("/var/lib/kubelet/plugins_registry/fuse.csi.fluid.io-reg.sock"),
                PathBuf::from("/csi/csi.sock")
            ))
        );
        let c = parse(&[
            "--registration-dir=/r",
            "--kubelet-registration-path=/var/lib/kubelet/plugins/fuse.csi.fluid.io/csi.sock",
        ])
        .unwrap();
        assert_eq!(
            c.registration().unwrap().unwrap().1,
            PathBuf::from("/var/lib/kubelet/plugins/fuse.csi.fluid.io/csi.sock")
        );
        for bad in [
            vec!["--registration-dir=relative"],
            vec!["--kubelet-registration-path=/x/csi.sock"],
            vec![
                "--registration-dir=/r",
                "--kubelet-registration-path=x.sock",
            ],
            vec!["--registration-dir=/r", "--endpoint=tcp://127.0.0.1:1"],
        ] {
            assert!(parse(&bad).is_err(), "{bad:?}");
        }
        let long = format!("--registration-dir=/{}", "d".repeat(100));
        let err = parse(&[&long]).unwrap_err().to_string();
        assert!(err.contains("--registration-dir"), "{err}");
    }

    #[test]
    fn advertised_cache_endpoint() {
        let parse = |extra: &[&str]| {
            let mut args = vec!["fluid-csi-node", "--nodeid=n1"];
            args.extend(extra);
            Config::try_from_args(&args).unwrap()
        };
        let c = parse(&[]);
        let any: SocketAddr = "0.0.0.0:9600".parse().unwrap();
        let any6: SocketAddr = "[::]:9600".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:41234".parse().unwrap();
        assert_eq!(c.cache_advertise(local).unwrap(), "127.0.0.1:41234");
        for wildcard in [any, any6] {
            let e = c.cache_advertise(wildcard).unwrap_err();
            assert!(e.contains("--cache-advertise"), "{e}");
        }
        let c = parse(&["--cache-advertise=10.1.2.3:9600"]);
        assert_eq!(c.cache_advertise(any).unwrap(), "10.1.2.3:9600");
        // An IPv6 pod IP followed by the port, as the chart's $(POD_IP):PORT gives it.
        for given in ["fd00::1:9600", "[fd00::1]:9600"] {
            let c = parse(&[&format!("--cache-advertise={given}")]);
            assert_eq!(c.cache_advertise(any6).unwrap(), "[fd00::1]:9600");
        }
    }

    #[test]
    fn a_cache_endpoint_other_hosts_reach_needs_the_token_in_a_cluster() {
        let parse = |extra: &[&str]| {
            let mut args = vec!["fluid-csi-node", "--nodeid=n1", "--kubernetes"];
            args.extend(extra);
            Config::try_from_args(&args)
        };
        let e = parse(&["--cache-endpoint=tcp://0.0.0.0:7788"]).unwrap_err();
        assert!(e.to_string().contains("--cache-token"), "{e}");
        parse(&["--cache-endpoint=tcp://127.0.0.1:0"]).unwrap();
        parse(&[
            "--cache-endpoint=tcp://0.0.0.0:7788",
            "--cache-token=a-token-of-32-characters-or-more-0123",
        ])
        .unwrap();
    }
}
