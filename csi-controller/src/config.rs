//! The command line of `fluid-csi-controller`: one config struct, built by clap.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use fluid_proto::Endpoint;
use fluid_proto::identity::check_driver_name;

/// The CSI driver name unless `--drivername` says otherwise (the CSIDriver object's name).
pub const DEFAULT_DRIVER_NAME: &str = "fuse.csi.fluid.io";

#[derive(Parser, Debug, Clone)]
#[command(
    name = "fluid-csi-controller",
    version,
    about = "CSI Identity and Controller plugin of Fluid: creates volumes for Fluid Datasets (or inline mount points) for the external-provisioner",
    long_about = None
)]
pub struct Config {
    /// gRPC endpoint to serve CSI on: unix:///path/to.sock (what the external-provisioner
    /// sidecar dials) or tcp://host:port. A stale socket file is replaced; the file is removed
    /// on shutdown.
    #[arg(long, default_value = "unix:///csi/csi.sock", value_parser = parse_endpoint)]
    pub endpoint: Endpoint,

    /// CSI driver name reported by GetPluginInfo; must match the CSIDriver object and the
    /// StorageClass provisioner. 1-63 characters of [a-zA-Z0-9-_.], alphanumeric at both ends.
    #[arg(long, default_value = DEFAULT_DRIVER_NAME, value_parser = parse_driver_name)]
    pub drivername: String,

    /// Directory holding one JSON record per created volume (volumes/<id>.json), so that
    /// CreateVolume stays idempotent and ListVolumes complete across restarts. Created if absent.
    #[arg(long, default_value = "/var/lib/fluid/controller")]
    pub state_dir: PathBuf,

    /// Dataset catalogue for running without Kubernetes: a YAML stream (documents separated by
    /// `---`, or one `kind: List` with `items:`) of Fluid Dataset objects
    /// (`apiVersion: data.fluid.io/v1alpha1`, `kind: Dataset`, `metadata: {name, namespace}`,
    /// `spec.mounts[]` with mountPoint, name, path, options, readOnly, and Fluid's
    /// `spec.sharedOptions`). Optional cache settings per Dataset: `spec.tiers` (a list of
    /// fluid-fuse --tier specs, e.g. `mem:2GiB`, `ssd:/var/cache/fluid:100GiB,high=0.95,low=0.7`)
    /// and `spec.blockSize` (e.g. `4MiB`). Checked at start; an error names the document and
    /// field. Without it only inline `mountPoint` volumes can be created.
    #[arg(long, value_name = "FILE")]
    pub datasets: Option<PathBuf>,

    /// Also run the Kubernetes side: the Dataset reconciler (Dataset + CacheRuntime -> PV, PVC,
    /// credentials Secret, status), the cache-state refresh, and CreateVolume resolving the
    /// `dataset` parameter from Dataset objects of the PVC's namespace. Connects with the
    /// in-cluster service account, or KUBECONFIG outside a cluster.
    #[arg(long, env = "FLUID_KUBERNETES")]
    pub kubernetes: bool,

    /// With --kubernetes: run the reconcilers only while holding a Lease, so that of several
    /// replicas one does (the CSI service and the webhook answer in all). A standby takes over
    /// within --leader-election-duration of the leader's end.
    #[arg(long, env = "FLUID_LEADER_ELECT")]
    pub leader_elect: bool,

    /// The Lease's namespace (the chart gives the controller's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub leader_election_namespace: String,

    /// The Lease's name.
    #[arg(long, default_value = "fluid-csi-controller")]
    pub leader_election_id: String,

    /// How long a Lease lasts unrenewed (renewed every third of it).
    #[arg(long, default_value = "15s", value_parser = parse_interval)]
    pub leader_election_duration: std::time::Duration,

    /// Shared token sent with every call to the node plugins' cache endpoints (they check it
    /// with the same variable): cache figures, warm-ups, evictions, releases. 16 printable
    /// characters or more.
    #[arg(long, global = true, env = fluid_proto::cache_auth::TOKEN_ENV, hide_env_values = true, value_name = "TOKEN", value_parser = fluid_proto::cache_auth::parse_token)]
    pub cache_token: Option<fluid_proto::cache_auth::Token>,

    /// How often each bound Dataset's status.cacheStates is refreshed from the nodes' cache
    /// daemons (with --kubernetes).
    #[arg(long, default_value = "30s", value_parser = parse_interval)]
    pub stats_interval: std::time::Duration,

    /// Serve the cache-aware scheduling webhook (a mutating admission webhook for pods, HTTPS)
    /// on this address, e.g. `0.0.0.0:9443`: pods that mount a Dataset's PVC get node affinity
    /// for the nodes holding its cache. Paths: POST /mutate-pods, GET /healthz. Needs
    /// --kubernetes (PVCs and Datasets are looked up in the API server). Off when not given.
    #[arg(long, value_name = "ADDR:PORT", requires = "kubernetes")]
    pub webhook_listen: Option<std::net::SocketAddr>,

    /// Walk S3/OSS Datasets without keys (for their size) with this controller's own cloud
    /// identity (the AWS default chain: IRSA, instance role, environment). Off, such a walk
    /// fails and says why: a tenant could otherwise learn of any bucket the controller can read.
    #[arg(long, env = "FLUID_ALLOW_AMBIENT_CREDENTIALS")]
    pub allow_ambient_credentials: bool,

    /// HDFS users (comma separated) a Dataset may name in its `user` option when the
    /// controller walks it for its size; `*` allows any. Default: none (such walks fail).
    #[arg(
        long,
        env = "FLUID_HDFS_USERS",
        value_name = "USER,...",
        value_delimiter = ','
    )]
    pub hdfs_users: Vec<String>,

    /// Directories (absolute, comma separated) under which a Dataset's `local://` mount points
    /// may lie, as the node plugins are told (`--local-roots`): a Dataset elsewhere is refused
    /// (phase Failed, saying why) before any node is asked. Default: none.
    #[arg(
        long,
        env = "FLUID_LOCAL_ROOTS",
        value_name = "DIR,...",
        value_delimiter = ','
    )]
    pub local_roots: Vec<std::path::PathBuf>,

    /// Endpoints (comma separated: `*`, or `[http(s)://]HOST[:PORT]`, HOST may start with
    /// `*.`) to which a Dataset's credentials from a Secret may be sent, as the node plugins
    /// are told. The access key id and session token travel to the endpoint, so one the Dataset
    /// chose that is neither listed nor named by the Secret itself (its key `endpoint`) is
    /// refused (phase Failed, saying why) and never walked. Default: none (only the store's
    /// own endpoints, e.g. AWS by region).
    #[arg(
        long,
        env = "FLUID_CREDENTIAL_ENDPOINTS",
        value_name = "ENDPOINT,...",
        value_delimiter = ',',
        value_parser = fluid_volume::endpoints::pattern_flag
    )]
    pub credential_endpoints: Vec<fluid_volume::endpoints::EndpointPattern>,

    /// Answer the kubelet's liveness probe: `GET /healthz` on HOST:PORT is 200 while this
    /// plugin's CSI endpoint answers Probe (no livenessprobe sidecar needed).
    #[arg(long, value_name = "HOST:PORT")]
    pub health_listen: Option<std::net::SocketAddr>,

    /// The webhook's serving certificate: a PEM chain, leaf first, valid for the name the API
    /// server dials (the chart's Service DNS name). Read once at start.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/etc/fluid/webhook/tls.crt"
    )]
    pub webhook_cert: PathBuf,

    /// The private key of --webhook-cert (PEM: PKCS#8, PKCS#1 or SEC1). Read once at start.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/etc/fluid/webhook/tls.key"
    )]
    pub webhook_key: PathBuf,

    /// Without a subcommand the controller serves CSI (how the Deployment, the tests and
    /// csi-sanity start it).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// One-shot tasks instead of serving.
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Print the CustomResourceDefinitions of data.fluid.io (Dataset, CacheRuntime, DataLoad)
    /// as a YAML stream: the files of deploy/charts/fluid/crds/ concatenated.
    Crds,
    /// Drop a Dataset's blocks from the cache of every node that serves it (the nodes labelled
    /// fluid.io/s-<namespace>-<name>, through their cache endpoints), and print what each
    /// freed. Uses the in-cluster service account, or KUBECONFIG.
    Evict {
        /// The Dataset, as NAMESPACE/NAME.
        #[arg(value_parser = parse_dataset_ref)]
        dataset: String,
        /// A path inside the Dataset to evict (repeatable); default: all of it.
        #[arg(long = "path", value_name = "PATH")]
        paths: Vec<String>,
    },
}

fn parse_endpoint(s: &str) -> Result<Endpoint, String> {
    s.parse()
        .map_err(|e: fluid_proto::EndpointError| e.to_string())
}

fn parse_dataset_ref(s: &str) -> Result<String, String> {
    match fluid_volume::context::parse_dataset(s) {
        Some(_) => Ok(s.to_string()),
        None => Err(format!("{s:?}: give the Dataset as NAMESPACE/NAME")),
    }
}

fn parse_interval(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < std::time::Duration::from_secs(1) {
        return Err(format!("{s:?} is too short: at least 1s"));
    }
    Ok(d)
}

fn parse_driver_name(s: &str) -> Result<String, String> {
    check_driver_name(s)?;
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn defaults_and_validation() {
        Config::command().debug_assert();
        let c = Config::try_parse_from(["fluid-csi-controller"]).unwrap();
        assert_eq!(c.endpoint, "unix:///csi/csi.sock".parse().unwrap());
        assert_eq!(c.drivername, DEFAULT_DRIVER_NAME);
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/fluid/controller"));
        assert!(c.datasets.is_none());
        assert!(!c.kubernetes);
        assert_eq!(c.stats_interval, std::time::Duration::from_secs(30));
        assert!(Config::try_parse_from(["x", "--stats-interval", "10ms"]).is_err());
        assert!(Config::try_parse_from(["x", "--drivername", "-bad-"]).is_err());
        assert!(Config::try_parse_from(["x", "--endpoint", "relative.sock"]).is_err());
        let c = Config::try_parse_from([
            "x",
            "--endpoint",
            "tcp://127.0.0.1:0",
            "--datasets",
            "/d.yaml",
        ])
        .unwrap();
        assert_eq!(c.datasets, Some(PathBuf::from("/d.yaml")));
        assert_eq!(c.command, None);
        let c = Config::try_parse_from(["x", "crds"]).unwrap();
        assert_eq!(c.command, Some(Command::Crds));
        let c = Config::try_parse_from(["x", "evict", "ml/imagenet", "--path", "/train"]).unwrap();
        assert_eq!(
            c.command,
            Some(Command::Evict {
                dataset: "ml/imagenet".into(),
                paths: vec!["/train".into()]
            })
        );
        assert!(Config::try_parse_from(["x", "evict", "imagenet"]).is_err());
    }

    #[test]
    fn webhook_flags() {
        let c = Config::try_parse_from(["x"]).unwrap();
        assert_eq!(c.webhook_listen, None);
        assert_eq!(c.webhook_cert, PathBuf::from("/etc/fluid/webhook/tls.crt"));
        assert_eq!(c.webhook_key, PathBuf::from("/etc/fluid/webhook/tls.key"));
        let c = Config::try_parse_from([
            "x",
            "--kubernetes",
            "--webhook-listen",
            "0.0.0.0:9443",
            "--webhook-cert",
            "/c.pem",
            "--webhook-key",
            "/k.pem",
        ])
        .unwrap();
        assert_eq!(c.webhook_listen, Some("0.0.0.0:9443".parse().unwrap()));
        assert_eq!(c.webhook_cert, PathBuf::from("/c.pem"));
        assert_eq!(c.webhook_key, PathBuf::from("/k.pem"));
        // The webhook looks Datasets up in the API server.
        assert!(Config::try_parse_from(["x", "--webhook-listen", "0.0.0.0:9443"]).is_err());
        assert!(Config::try_parse_from(["x", "--kubernetes", "--webhook-listen", "9443"]).is_err());
    }
}
