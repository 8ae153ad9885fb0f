//! Endpoints of the test servers, read from `scripts/services.sh env` (or from the
//! environment when already exported), and checked to be reachable before use.

use std::collections::HashMap;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// Root of the repository (the tests crate sits one level below it).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The Helm chart, `deploy/charts/fluid`.
pub fn chart_dir() -> PathBuf {
    repo_root().join("deploy/charts/fluid")
}

fn service_env() -> &'static HashMap<String, String> {
    static ENV: OnceLock<HashMap<String, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let script = repo_root().join("scripts/services.sh");
        let out = Command::new("bash").arg(&script).arg("env").output();
        let mut vars = HashMap::new();
        if let Ok(out) = out {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                if let Some((k, v)) = line
                    .trim()
                    .strip_prefix("export ")
                    .and_then(|kv| kv.split_once('='))
                {
                    vars.insert(k.to_string(), v.trim_matches(['"', '\'']).to_string());
                }
            }
        }
        vars
    })
}

/// The value of a service variable: the process environment wins over `services.sh env`.
pub fn var(service: &str, name: &str) -> Result<String> {
    std::env::var(name).ok().or_else(|| service_env().get(name).cloned()).with_context(|| {
        format!("{service} is not configured: {name} is unset; start it with `scripts/services.sh up`")
    })
}

/// Fails with a message naming `service` unless something accepts TCP connections at `url`.
pub fn require_reachable(service: &str, url: &str) -> Result<()> {
    let hostport = url
        .split("://")
        .nth(1)
        .unwrap_or(url)
        .split('/')
        .next()
        .unwrap_or_default();
    let addr = hostport
        .to_socket_addrs()
        .with_context(|| format!("{service}: bad address {url}"))?
        .next()
        .with_context(|| format!("{service}: no address for {url}"))?;
    if TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err() {
        bail!("{service} is not running at {url}; start it with `scripts/services.sh up`");
    }
    Ok(())
}

/// `FLUID_CREDENTIAL_ENDPOINTS` for the plugins the tests start: the test S3 servers that are
/// configured (credentials from Secrets go only to endpoints the administrator lists), or
/// nothing when none is. A test that wants another list passes `--credential-endpoints`: a flag
/// wins over the variable.
pub fn credential_endpoints_env() -> Option<(&'static str, String)> {
    let list: Vec<String> = ["FLUID_S3_ENDPOINT", "FLUID_RGW_ENDPOINT"]
        .iter()
        .filter_map(|v| var("s3", v).ok())
        .collect();
    (!list.is_empty()).then(|| ("FLUID_CREDENTIAL_ENDPOINTS", list.join(",")))
}

/// An S3-compatible server with static credentials.
#[derive(Clone, Debug)]
pub struct S3Server {
    pub name: &'static str,
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
}

impl S3Server {
    /// SeaweedFS's S3 gateway.
    pub fn seaweedfs() -> Result<Self> {
        Self::from_vars("SeaweedFS S3", "FLUID_S3")
    }

    /// Ceph's RADOS Gateway.
    pub fn ceph_rgw() -> Result<Self> {
        Self::from_vars("Ceph RGW", "FLUID_RGW")
    }

    fn from_vars(name: &'static str, prefix: &str) -> Result<Self> {
        let s = S3Server {
            name,
            endpoint: var(name, &format!("{prefix}_ENDPOINT"))?,
            access_key: var(name, &format!("{prefix}_ACCESS_KEY"))?,
            secret_key: var(name, &format!("{prefix}_SECRET_KEY"))?,
            region: var(name, &format!("{prefix}_REGION")).unwrap_or_else(|_| "us-east-1".into()),
        };
        require_reachable(name, &s.endpoint)?;
        Ok(s)
    }

    /// `fluid-fuse mount` arguments for `url` on this server (endpoint, keys, region).
    pub fn mount_args(&self, url: &str) -> Vec<String> {
        [
            "--mount",
            url,
            "--option",
            &format!("endpoint={}", self.endpoint),
            "--option",
            &format!("access-key={}", self.access_key),
            "--option",
            &format!("secret-key={}", self.secret_key),
            "--option",
            &format!("region={}", self.region),
        ]
        .map(str::to_string)
        .to_vec()
    }

    /// A path-style client, as the servers here have no wildcard DNS.
    pub fn client(&self) -> aws_sdk_s3::Client {
        let creds = aws_sdk_s3::config::Credentials::new(
            &self.access_key,
            &self.secret_key,
            None,
            None,
            "fluid-tests",
        );
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .endpoint_url(&self.endpoint)
            .region(aws_sdk_s3::config::Region::new(self.region.clone()))
            .credentials_provider(creds)
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }
}

/// The MiniDFS NameNode URL, `hdfs://127.0.0.1:PORT`.
pub fn hdfs_url() -> Result<String> {
    let url = var("MiniDFS HDFS", "FLUID_HDFS_URL")?;
    require_reachable("MiniDFS HDFS", &url)?;
    Ok(url)
}

/// The csi-sanity binary.
pub fn csi_sanity() -> Result<PathBuf> {
    let path = PathBuf::from(var("csi-sanity", "FLUID_CSI_SANITY")?);
    if !path.is_file() {
        bail!(
            "csi-sanity is not installed at {}; run `scripts/services.sh up csisanity`",
            path.display()
        );
    }
    Ok(path)
}

/// The address a daemon started with port 0 logged it listens on: the last line of `log()`
/// that contains `what` and a field `listen=[tcp://]HOST:PORT`, once there is one (30 s at
/// most). Daemons bind port 0 themselves, so no other process can take the port between a
/// test choosing it and the daemon binding it.
pub fn logged_listen(log: impl Fn() -> String, what: &str) -> Result<std::net::SocketAddr> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let text = log();
        let found = text
            .lines()
            .rev()
            .filter(|l| l.contains(what))
            .find_map(|l| {
                let field = l
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("listen="))?;
                field.trim_start_matches("tcp://").parse().ok()
            });
        if let Some(addr) = found {
            return Ok(addr);
        }
        if std::time::Instant::now() >= deadline {
            bail!("no `listen=` address logged with {what:?} within 30 s; the log:\n{text}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// `GET path` on 127.0.0.1:`port` over plain HTTP/1.1; the whole answer, status line first.
pub fn http_get(port: u16, path: &str) -> Result<String> {
    use std::io::{Read, Write};
    let mut sock = std::net::TcpStream::connect(("127.0.0.1", port))?;
    sock.set_read_timeout(Some(std::time::Duration::from_secs(20)))?;
    write!(
        sock,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    sock.read_to_string(&mut answer)?;
    Ok(answer)
}

/// A name unique to this test process, for buckets and directories.
pub fn unique_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{nanos:x}", std::process::id())
}

/// A bucket that is emptied and deleted when dropped, even when the test failed: SeaweedFS
/// runs out of volumes when buckets pile up.
pub struct TempBucket {
    pub name: String,
    client: aws_sdk_s3::Client,
}

impl S3Server {
    pub fn temp_bucket(&self, prefix: &str) -> Result<TempBucket> {
        let name = unique_name(prefix);
        let client = self.client();
        let n = name.clone();
        let c = client.clone();
        on_own_runtime(async move { c.create_bucket().bucket(&n).send().await.map(|_| ()) })
            .with_context(|| format!("{}: creating bucket {name}", self.name))?;
        Ok(TempBucket { name, client })
    }
}

/// Runs a future to completion on a runtime of its own thread, so it works from sync code
/// and from inside another runtime (e.g. in Drop).
pub fn on_own_runtime<T: Send + 'static, E: Send + Sync + 'static + std::error::Error>(
    f: impl std::future::Future<Output = std::result::Result<T, E>> + Send + 'static,
) -> Result<T> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(f).map_err(anyhow::Error::from)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("runtime thread panicked"))?
}

impl Drop for TempBucket {
    fn drop(&mut self) {
        let (client, bucket) = (self.client.clone(), self.name.clone());
        let _ = on_own_runtime(async move {
            let mut token = None;
            loop {
                let page = client
                    .list_objects_v2()
                    .bucket(&bucket)
                    .set_continuation_token(token)
                    .send()
                    .await?;
                for obj in page.contents() {
                    if let Some(key) = obj.key() {
                        let _ = client.delete_object().bucket(&bucket).key(key).send().await;
                    }
                }
                token = page.next_continuation_token().map(str::to_string);
                if token.is_none() {
                    break;
                }
            }
            client
                .delete_bucket()
                .bucket(&bucket)
                .send()
                .await
                .map(|_| ())
                .map_err(aws_sdk_s3::Error::from)
        });
    }
}
