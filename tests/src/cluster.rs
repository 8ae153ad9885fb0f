//! The single-node cluster of `scripts/services.sh up cluster`, driven the way a user drives
//! one: `helm` and `kubectl` with the cluster's admin kubeconfig, images imported into its
//! containerd. The tests of `tests/tests/cluster.rs` share its one node, so each holds
//! [`Cluster::lock`] for its whole run.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use crate::services::{self, S3Server, TempBucket, chart_dir, on_own_runtime, repo_root, var};

/// The Helm release and namespace the tests install the chart as.
pub const RELEASE: &str = "fluid";
pub const RELEASE_NAMESPACE: &str = "fluid-system";
/// The chart's CSI driver name.
pub const DRIVER: &str = "fuse.csi.fluid.io";

pub struct Cluster {
    pub kubeconfig: PathBuf,
    pub helm: PathBuf,
    pub node: String,
    /// The busybox image the cluster service imported.
    pub busybox: String,
    /// SeaweedFS as pods reach it (the node address, not 127.0.0.1).
    pub s3_endpoint: String,
}

static CLUSTER: OnceLock<std::result::Result<Cluster, String>> = OnceLock::new();
static LOCK: Mutex<()> = Mutex::new(());
static IMAGE: OnceLock<std::result::Result<(), String>> = OnceLock::new();

impl Cluster {
    /// The cluster, checked once per test process: its node is Ready.
    pub fn get() -> Result<&'static Cluster> {
        CLUSTER
            .get_or_init(|| Cluster::from_env().map_err(|e| format!("{e:#}")))
            .as_ref()
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    fn from_env() -> Result<Cluster> {
        let v = |name| var("the test cluster", name);
        let c = Cluster {
            kubeconfig: PathBuf::from(v("FLUID_CLUSTER_KUBECONFIG")?),
            helm: PathBuf::from(var("helm", "FLUID_HELM")?),
            node: v("FLUID_CLUSTER_NODE")?,
            busybox: v("FLUID_CLUSTER_BUSYBOX_IMAGE")?,
            s3_endpoint: v("FLUID_CLUSTER_S3_ENDPOINT")?,
        };
        let ready = c
            .kubectl(&[
                "get",
                "node",
                &c.node,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ])
            .context(
                "the test cluster is not running; start it with `scripts/services.sh up cluster`",
            )?;
        if ready.trim() != "True" {
            bail!(
                "node {} of the test cluster is not Ready ({ready:?})",
                c.node
            );
        }
        c.drop_stale_namespaces()?;
        Ok(c)
    }

    /// Deletes (in the background) the test namespaces of test processes that are gone: a run
    /// killed before its cleanup leaves them, and the uninstall test waits for every test
    /// namespace to go. A namespace is named `PREFIX-PID-NANOS` ([`services::unique_name`]);
    /// one whose PID lives (this run's, or a reused number) is left alone.
    fn drop_stale_namespaces(&self) -> Result<()> {
        let names = self.kubectl(&[
            "get",
            "namespaces",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ])?;
        for name in names.split_whitespace().filter(|n| n.starts_with("e2e-")) {
            if stale_test_namespace(name, |pid| Path::new(&format!("/proc/{pid}")).exists()) {
                self.kubectl(&["delete", "namespace", name, "--wait=false"])?;
            }
        }
        Ok(())
    }

    /// Exclusive use of the cluster for one test (a test that panicked leaves it usable).
    pub fn lock() -> MutexGuard<'static, ()> {
        LOCK.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `kubectl ARGS`: its standard output, or an error with its standard error.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        self.kubectl_with_input(args, None)
    }

    /// `kubectl apply -f -` of a YAML document stream.
    pub fn apply(&self, yaml: &str) -> Result<String> {
        self.kubectl_with_input(&["apply", "-f", "-"], Some(yaml))
    }

    fn kubectl_with_input(&self, args: &[&str], input: Option<&str>) -> Result<String> {
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        run(cmd, input).with_context(|| format!("kubectl {}", args.join(" ")))
    }

    /// `helm ARGS` against the cluster.
    pub fn helm(&self, args: &[&str]) -> Result<String> {
        let mut cmd = Command::new(&self.helm);
        cmd.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        run(cmd, None).with_context(|| format!("helm {}", args.join(" ")))
    }

    /// `kubectl get KIND NAME [-n NS] -o jsonpath=PATH`.
    pub fn jsonpath(&self, ns: Option<&str>, kind: &str, name: &str, path: &str) -> Result<String> {
        let jp = format!("jsonpath={path}");
        let mut args = vec!["get", kind, name, "-o", &jp];
        if let Some(ns) = ns {
            args.extend(["-n", ns]);
        }
        self.kubectl(&args)
    }

    /// `kubectl exec` in a pod's first container.
    pub fn exec(&self, ns: &str, pod: &str, command: &[&str]) -> Result<String> {
        let mut args = vec!["exec", "-n", ns, pod, "--"];
        args.extend_from_slice(command);
        self.kubectl(&args)
    }

    /// The Fluid image of this workspace, built from the debug binaries (`make test`'s
    /// profile) and imported into the cluster's containerd, once per test process.
    pub fn import_image(&self) -> Result<()> {
        IMAGE
            .get_or_init(|| {
                let script = repo_root().join("scripts/image.sh");
                let mut cmd = Command::new(script);
                cmd.args(["--debug", "--import", "--out"])
                    .arg(repo_root().join("target/image-debug"));
                run(cmd, None)
                    .map(|_| ())
                    .map_err(|e| format!("scripts/image.sh --debug --import: {e:#}"))
            })
            .clone()
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// The chart installed with its defaults and the image of this workspace. The first call
    /// of a test process installs afresh, so its pods run the image just built; later calls
    /// install only when a test uninstalled it.
    pub fn install(&self) -> Result<()> {
        static INSTALLED_BEFORE: AtomicBool = AtomicBool::new(false);
        self.import_image()?;
        let fresh = !INSTALLED_BEFORE.swap(true, Ordering::SeqCst);
        let installed = self
            .helm(&["status", RELEASE, "-n", RELEASE_NAMESPACE])
            .is_ok();
        if installed && !fresh {
            return Ok(());
        }
        if installed {
            self.uninstall()?;
        }
        let chart = chart_dir();
        let chart = chart.to_string_lossy();
        let started = Instant::now();
        self.helm(&[
            "install",
            RELEASE,
            &chart,
            "-n",
            RELEASE_NAMESPACE,
            "--create-namespace",
            // The test bucket server may receive the Datasets' credentials.
            "--set-json",
            &format!("credentialEndpoints=[{:?}]", self.s3_endpoint),
            "--wait",
            "--timeout",
            "180s",
        ])?;
        // Pods mounting a Fluid volume before the kubelet registered the driver fail their
        // mount and are retried with a back-off that reaches two minutes: wait here instead.
        self.wait("CSINode lists the driver", Duration::from_secs(120), || {
            let d = self.jsonpath(None, "csinode", &self.node, "{.spec.drivers[*].name}")?;
            Ok(d.contains(DRIVER).then_some(()))
        })?;
        eprintln!(
            "helm install: Ready and registered with the kubelet in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// The events of object `name` in `ns`, oldest first, one line each (for errors).
    pub fn events_of(&self, ns: &str, name: &str) -> String {
        self.kubectl(&[
            "get",
            "events",
            "-n",
            ns,
            "--field-selector",
            &format!("involvedObject.name={name}"),
            "--sort-by=.lastTimestamp",
            "-o",
            "custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message",
        ])
        .unwrap_or_else(|e| format!("(no events: {e:#})"))
    }

    /// `helm uninstall --wait`.
    pub fn uninstall(&self) -> Result<()> {
        self.helm(&[
            "uninstall",
            RELEASE,
            "-n",
            RELEASE_NAMESPACE,
            "--wait",
            "--timeout",
            "120s",
        ])?;
        Ok(())
    }

    /// A namespace of its own for a test, deleted (in the background) when dropped.
    pub fn namespace(&self, prefix: &str) -> Result<Namespace<'_>> {
        let name = services::unique_name(prefix).to_lowercase();
        self.kubectl(&["create", "namespace", &name])?;
        Ok(Namespace {
            cluster: self,
            name,
        })
    }

    /// Waits until `check` gives a value, polling twice a second; the error says what was
    /// awaited and the last thing `check` said.
    pub fn wait<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut() -> Result<Option<T>>,
    ) -> Result<T> {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("no answer yet");
        loop {
            match check() {
                Ok(Some(v)) => return Ok(v),
                Ok(None) => {}
                Err(e) => last = format!("{e:#}"),
            }
            if Instant::now() >= deadline {
                bail!("{what}: not within {} s; last: {last}", timeout.as_secs());
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Waits for a pod's Ready condition.
    pub fn wait_ready(&self, ns: &str, pod: &str, timeout: Duration) -> Result<()> {
        self.wait(&format!("pod {ns}/{pod} Ready"), timeout, || {
            let ready = self.jsonpath(
                Some(ns),
                "pod",
                pod,
                "{.status.conditions[?(@.type==\"Ready\")].status}",
            )?;
            Ok((ready == "True").then_some(()))
        })
        .with_context(|| self.events_of(ns, pod))
    }

    /// The release's node plugin pod that is not being deleted.
    pub fn node_plugin_pod(&self) -> Result<String> {
        let list = self.kubectl(&[
            "get",
            "pods",
            "-n",
            RELEASE_NAMESPACE,
            "-l",
            "app.kubernetes.io/component=node",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
        ])?;
        list.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|w| w.len() == 1)
            .map(|w| w[0].to_string())
            .ok_or_else(|| {
                anyhow::anyhow!("no node plugin pod that is not being deleted: {list:?}")
            })
    }

    /// The pids of the node's fluid-fuse daemons (keepers; the tests run on the node).
    pub fn fuse_daemons(&self) -> Vec<u32> {
        crate::daemon::processes()
            .into_iter()
            .filter(|p| p.is_fluid_fuse("mount"))
            .map(|p| p.pid)
            .collect()
    }

    /// The mount points of FUSE file systems of type `fluid` on the node.
    pub fn fluid_mounts(&self) -> Vec<String> {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                l.split(" - ")
                    .nth(1)
                    .is_some_and(|r| r.starts_with("fuse fluid") || r.starts_with("fuse.fluid"))
            })
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .collect()
    }
}

/// A test namespace, deleted without waiting when dropped.
pub struct Namespace<'a> {
    cluster: &'a Cluster,
    pub name: String,
}

impl Drop for Namespace<'_> {
    fn drop(&mut self) {
        let _ = self
            .cluster
            .kubectl(&["delete", "namespace", &self.name, "--wait=false"]);
    }
}

/// A bucket of SeaweedFS with a few files (nested, empty, several MiB), and their SHA-256.
pub struct DatasetBucket {
    pub bucket: TempBucket,
    pub server: S3Server,
    /// Object key -> hex SHA-256.
    pub files: BTreeMap<String, String>,
}

impl DatasetBucket {
    pub fn create(prefix: &str) -> Result<DatasetBucket> {
        let server = S3Server::seaweedfs()?;
        let bucket = server.temp_bucket(prefix)?;
        let big: Vec<u8> = (0..5u32 << 20)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let objects: Vec<(String, Vec<u8>)> = vec![
            ("hello.txt".into(), b"hello from the bucket\n".to_vec()),
            ("train/part-0.bin".into(), big),
            (
                "train/labels/cats.csv".into(),
                b"id,label\n1,cat\n2,cat\n".to_vec(),
            ),
            ("empty".into(), Vec::new()),
        ];
        let mut files = BTreeMap::new();
        for (key, body) in objects {
            files.insert(key.clone(), hex(&Sha256::digest(&body)));
            let (client, name) = (server.client(), bucket.name.clone());
            on_own_runtime(async move {
                client
                    .put_object()
                    .bucket(name)
                    .key(key)
                    .body(body.into())
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(aws_sdk_s3::Error::from)
            })?;
        }
        Ok(DatasetBucket {
            bucket,
            server,
            files,
        })
    }

    /// The `sha256sum` lines a reader under `mount` prints for these files, sorted by path.
    pub fn expected_sums(&self, mount: &str) -> String {
        self.files
            .iter()
            .map(|(k, h)| format!("{h}  {mount}/{k}\n"))
            .collect()
    }

    /// The shell command that prints the `sha256sum` of every file under `mount`, sorted.
    pub fn sum_command(mount: &str) -> String {
        format!("find {mount} -type f | sort | xargs sha256sum")
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn run(mut cmd: Command, input: Option<&str>) -> Result<String> {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().context("starting")?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether `name` is a test namespace (`e2e-...-PID-NANOS`) whose process is gone.
fn stale_test_namespace(name: &str, alive: impl Fn(u32) -> bool) -> bool {
    let mut parts = name.rsplitn(3, '-');
    let (Some(nanos), Some(pid), Some(_prefix)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let hex = !nanos.is_empty() && nanos.chars().all(|c| c.is_ascii_hexdigit());
    match pid.parse::<u32>() {
        Ok(pid) if hex && name.starts_with("e2e-") => !alive(pid),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::stale_test_namespace;

    #[test]
    fn only_namespaces_of_gone_test_processes_are_stale() {
        let alive = |pid: u32| pid == 42;
        assert!(stale_test_namespace("e2e-host-26225-31c075c", alive));
        assert!(!stale_test_namespace("e2e-host-42-31c075c", alive), "alive");
        assert!(!stale_test_namespace("e2e-host-x-31c075c", alive), "no pid");
        assert!(
            !stale_test_namespace("e2e-host-26225-zz", alive),
            "no nanos"
        );
        assert!(
            !stale_test_namespace("team-a-26225-31c075c", alive),
            "not a test's"
        );
        assert!(!stale_test_namespace("e2e-1", alive));
    }
}
