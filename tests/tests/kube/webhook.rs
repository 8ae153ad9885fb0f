//! The cache-aware scheduling webhook end to end: the test kube-apiserver calls the real
//! `fluid-csi-controller --webhook-listen` over TLS (a CA and an IP-SAN server certificate made
//! with the `openssl` CLI) when pods are created, and the stored pods show the result: a
//! preferred term of weight 100 on the Dataset's node label, the required variant, pods of
//! shared Datasets kept off `fluid_exclusive` nodes, nothing for pods without Datasets, the
//! user's own terms kept, and pods still admitted once the webhook is gone
//! (`failurePolicy: Ignore`).
//!
//! Needs the kube-apiserver (`scripts/services.sh up kube`), `openssl` and `curl`, and the
//! binaries built (`cargo build -p csi-controller --bins`). The webhook configuration only
//! selects namespaces carrying a label with this run's id, so pods of other tests never reach
//! it; it is deleted at the end, even when the test fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use csi_controller::crd::{Dataset, Placement};
use fluid_tests::controller::ControllerProcess;
use fluid_tests::daemon::binary;
use fluid_tests::kube::{Kube, Temp, apply_crds, kubeconfig_path, unique_name, wait_for};
use fluid_tests::services::logged_listen;
use fluid_volume::labels::dataset_label_key;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Pod};
use k8s_openapi::serde_json::{self, Value, json};
use kube::api::Api;

const PREFERRED: &str = "preferredDuringSchedulingIgnoredDuringExecution";
const REQUIRED: &str = "requiredDuringSchedulingIgnoredDuringExecution";

/// A CA and a server certificate for 127.0.0.1, as PEM files in a temporary directory.
struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    fn make() -> Result<Certs> {
        let dir = tempfile::tempdir()?;
        std::fs::write(
            dir.path().join("server.ext"),
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
        )?;
        // EC keys: quick to make on a loaded machine. openssl 3 writes PKCS#8 keys. The commands
        // run in the directory, so file names need no quoting.
        for command in [
            "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key \
             -out ca.crt -days 2 -subj /CN=fluid-webhook-test-ca \
             -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign",
            "req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout tls.key \
             -out tls.csr -subj /CN=127.0.0.1",
            "x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out tls.crt -days 2 \
             -extfile server.ext",
        ] {
            openssl(dir.path(), command)?;
        }
        Ok(Certs { dir })
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }
}

fn openssl(dir: &Path, command: &str) -> Result<()> {
    let out = Command::new("openssl")
        .args(command.split_whitespace())
        .current_dir(dir)
        .output()
        .context("running openssl (install it: apt-get install openssl)")?;
    ensure!(
        out.status.success(),
        "openssl {command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// `fluid-csi-controller --kubernetes --webhook-listen 127.0.0.1:PORT`, killed when dropped.
/// The controller with the webhook on a port of 127.0.0.1 it chose itself.
struct Controller {
    process: ControllerProcess,
    port: u16,
}

impl Controller {
    fn start(certs: &Certs) -> Result<Controller> {
        let process = ControllerProcess::start(&[
            "--webhook-listen=127.0.0.1:0".to_string(),
            format!("--webhook-cert={}", certs.path("tls.crt").display()),
            format!("--webhook-key={}", certs.path("tls.key").display()),
        ])?;
        let port = logged_listen(|| process.log(), "scheduling webhook")?.port();
        Ok(Controller { process, port })
    }

    fn log(&self) -> String {
        self.process.log()
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    fn stop(&mut self) {
        self.process.stop();
    }
}

/// `curl` over TLS, trusting only the test CA: (HTTP status, body).
fn curl(certs: &Certs, url: &str, post: Option<&str>) -> Result<(u16, String)> {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "--max-time", "10", "--cacert"])
        .arg(certs.path("ca.crt"))
        .args(["-w", "\n%{http_code}"]);
    if let Some(body) = post {
        cmd.args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            body,
        ]);
    }
    let out = cmd.arg(url).output().context("running curl")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    let code = code.trim().parse().with_context(|| {
        format!(
            "curl {url}: no status ({})",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    Ok((code, body.to_string()))
}

/// The webhook configuration, calling the controller by URL (this apiserver has no endpoints
/// for Services) and only for namespaces labelled `label: run`.
fn webhook_configuration(
    name: &str,
    url: &str,
    ca: &[u8],
    label: &str,
    run: &str,
) -> Result<MutatingWebhookConfiguration> {
    let mut config: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [{
            "name": "pods.webhook.fluid.io",
            "clientConfig": {"url": url},
            "rules": [{
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "operations": ["CREATE"],
                "resources": ["pods"],
                "scope": "Namespaced"
            }],
            "namespaceSelector": {"matchLabels": {label: run}},
            "failurePolicy": "Ignore",
            "sideEffects": "None",
            "timeoutSeconds": 5,
            "admissionReviewVersions": ["v1"],
            "reinvocationPolicy": "Never"
        }]
    }))?;
    for w in config.webhooks.iter_mut().flatten() {
        w.client_config.ca_bundle = Some(ByteString(ca.to_vec()));
    }
    Ok(config)
}

fn pod(name: &str, claims: &[&str], labels: Value, spec_extra: Value) -> Result<Pod> {
    let volumes: Vec<Value> = claims
        .iter()
        .enumerate()
        .map(|(i, c)| json!({"name": format!("v{i}"), "persistentVolumeClaim": {"claimName": c}}))
        .collect();
    let mut spec = json!({
        "containers": [{"name": "main", "image": "busybox"}],
        "volumes": volumes
    });
    for (k, v) in spec_extra.as_object().into_iter().flatten() {
        spec[k] = v.clone();
    }
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": spec
    }))?)
}

fn pvc(name: &str, dataset_label: Option<&str>) -> Result<PersistentVolumeClaim> {
    let labels = match dataset_label {
        Some(ds) => json!({"fluid.io/dataset": ds}),
        None => json!({}),
    };
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "accessModes": ["ReadOnlyMany"],
            "storageClassName": "fluid",
            "resources": {"requests": {"storage": "1Gi"}}
        }
    }))?)
}

fn dataset(name: &str) -> Result<Dataset> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "data.fluid.io/v1alpha1",
        "kind": "Dataset",
        "metadata": {"name": name},
        "spec": {"mounts": [{"mountPoint": "local:///data", "name": "data"}]}
    }))?)
}

/// The stored pod's node affinity as JSON (`null` when it has none).
fn node_affinity(pod: &Pod) -> Value {
    let affinity = pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
    serde_json::to_value(affinity.and_then(|a| a.node_affinity.as_ref())).unwrap_or(Value::Null)
}

fn expression(key: &str) -> Value {
    json!({"key": key, "operator": "In", "values": ["true"]})
}

/// Creates the pod and reads it back from the API server.
async fn create_pod(kube: &Kube, ns: &str, pod: &Pod) -> Result<(Temp<Pod>, Pod)> {
    let created = kube.create_namespaced(ns, pod).await?;
    let stored = Api::<Pod>::namespaced(kube.client.clone(), ns)
        .get(&created.name)
        .await?;
    Ok((created, stored))
}

#[tokio::test]
async fn webhook_adds_cache_affinity_to_dataset_pods() -> Result<()> {
    let kube = Kube::connect().await?;
    apply_crds(&kube).await?;
    let certs = Certs::make()?;
    let mut controller = Controller::start(&certs)?;

    // The server answers over TLS, and refuses what is not a review.
    let health = wait_for("the webhook's /healthz", || async {
        match curl(&certs, &controller.url("/healthz"), None) {
            Ok((200, body)) => Ok(body),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .with_context(|| controller.log())?;
    assert_eq!(health.trim(), "ok");
    let (code, body) = curl(&certs, &controller.url("/mutate-pods"), Some("{not json"))?;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("AdmissionReview"), "{body}");

    // A namespace only this run's webhook configuration selects.
    let selector = "fluid-webhook-test";
    let run = unique_name("run");
    let ns_object: Namespace = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": unique_name("fluid-webhook"), "labels": {selector: run}}
    }))?;
    let ns_guard = kube.create_cluster(&ns_object).await?;
    let ns = ns_guard.name.as_str();

    let _ds = kube.create_namespaced(ns, &dataset("imagenet")?).await?;
    let _pvc = kube
        .create_namespaced(ns, &pvc("imagenet", Some("imagenet"))?)
        .await?;
    // A PVC of another name, labelled for the Dataset.
    let _pvc2 = kube
        .create_namespaced(ns, &pvc("train-data", Some("imagenet"))?)
        .await?;
    // A PVC without the label, named like a Dataset (made before the label existed).
    let _ds_old = kube.create_namespaced(ns, &dataset("coco")?).await?;
    let _pvc_old = kube.create_namespaced(ns, &pvc("coco", None)?).await?;
    // A PVC of no Dataset.
    let _scratch = kube.create_namespaced(ns, &pvc("scratch", None)?).await?;

    let ca = std::fs::read(certs.path("ca.crt"))?;
    let _config = kube
        .create_cluster(&webhook_configuration(
            &unique_name("fluid-webhook-test"),
            &controller.url("/mutate-pods"),
            &ca,
            selector,
            &run,
        )?)
        .await?;
    let key = dataset_label_key(ns, "imagenet");

    // (a) The API server picks the configuration up after a moment: create pods until one
    // comes back mutated; from then on every create goes through the webhook.
    let mut attempt = 0;
    let (_a, stored) = wait_for("a pod mutated by the webhook", || {
        attempt += 1;
        let name = format!("preferred-{attempt}");
        let kube = kube.clone();
        async move {
            let p = pod(&name, &["imagenet"], json!({}), json!({})).map_err(|e| e.to_string())?;
            let (guard, stored) = create_pod(&kube, ns, &p).await.map_err(|e| e.to_string())?;
            if node_affinity(&stored).is_null() {
                // Not yet: this one is deleted by its guard.
                return Err(format!("pod {name} has no node affinity"));
            }
            Ok((guard, stored))
        }
    })
    .await
    .with_context(|| controller.log())?;
    // Its Dataset is shared, so it also stays off nodes an Exclusive Dataset holds.
    let off = json!({"key": "fluid_exclusive", "operator": "DoesNotExist"});
    let stay_off = json!({"nodeSelectorTerms": [{"matchExpressions": [off]}]});
    assert_eq!(
        node_affinity(&stored),
        json!({
            PREFERRED: [{"weight": 100, "preference": {"matchExpressions": [expression(&key)]}}],
            REQUIRED: stay_off
        }),
        "{}",
        controller.log()
    );

    // (b) The required variant.
    let p = pod(
        "required",
        &["imagenet"],
        json!({"fluid.io/dataset.imagenet.sched": "required"}),
        json!({}),
    )?;
    let (_b, stored) = create_pod(&kube, ns, &p).await?;
    assert_eq!(
        node_affinity(&stored),
        json!({REQUIRED: {"nodeSelectorTerms": [{"matchExpressions": [expression(&key), off]}]}})
    );

    // (c) Pods without Datasets are stored as created: no affinity at all.
    for (name, claims) in [("no-volumes", &[][..]), ("scratch", &["scratch"][..])] {
        let (_c, stored) = create_pod(&kube, ns, &pod(name, claims, json!({}), json!({}))?).await?;
        let affinity = stored.spec.as_ref().and_then(|s| s.affinity.as_ref());
        assert!(affinity.is_none(), "{name}: {affinity:?}");
    }

    // (d) A pod that names the keys itself keeps its own terms, untouched.
    let own = json!({"affinity": {"nodeAffinity": {PREFERRED: [
        {"weight": 3, "preference": {"matchExpressions": [{"key": key, "operator": "DoesNotExist"}]}},
        {"weight": 1, "preference": {"matchExpressions": [{"key": "fluid_exclusive", "operator": "Exists"}]}}
    ]}}});
    let (_d, stored) = create_pod(
        &kube,
        ns,
        &pod("own", &["imagenet"], json!({}), own.clone())?,
    )
    .await?;
    assert_eq!(node_affinity(&stored), own["affinity"]["nodeAffinity"]);

    // A pod of an Exclusive Dataset may go where that Dataset is: only the preference.
    let mut private = dataset("private")?;
    private.spec.placement = Placement::Exclusive;
    let _ds_private = kube.create_namespaced(ns, &private).await?;
    let _pvc_private = kube
        .create_namespaced(ns, &pvc("private", Some("private"))?)
        .await?;
    let (_x, stored) = create_pod(
        &kube,
        ns,
        &pod("exclusive", &["private"], json!({}), json!({}))?,
    )
    .await?;
    assert_eq!(
        node_affinity(&stored),
        json!({PREFERRED: [{"weight": 100, "preference": {"matchExpressions": [expression(&dataset_label_key(ns, "private"))]}}]})
    );

    // A labelled PVC of another name, and an old unlabelled PVC named like its Dataset, next to
    // a user's own preference: one term each, the user's first and as it was.
    let user = json!({"weight": 7, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}});
    let p = pod(
        "two",
        &["train-data", "coco", "scratch"],
        json!({}),
        json!({"affinity": {"nodeAffinity": {PREFERRED: [user.clone()]}}}),
    )?;
    let (_e, stored) = create_pod(&kube, ns, &p).await?;
    let term =
        |k: &str| json!({"weight": 100, "preference": {"matchExpressions": [expression(k)]}});
    assert_eq!(
        node_affinity(&stored),
        json!({
            PREFERRED: [user, term(&dataset_label_key(ns, "coco")), term(&key)],
            REQUIRED: stay_off
        })
    );

    // (e) With the webhook gone, pods are still admitted (failurePolicy Ignore), unchanged.
    controller.stop();
    let mut attempt = 0;
    let (_f, stored) = wait_for("a pod admitted without the webhook", || {
        attempt += 1;
        let name = format!("after-{attempt}");
        let kube = kube.clone();
        async move {
            let p = pod(&name, &["imagenet"], json!({}), json!({})).map_err(|e| e.to_string())?;
            create_pod(&kube, ns, &p)
                .await
                .map_err(|e| format!("{e:#}"))
        }
    })
    .await?;
    assert!(node_affinity(&stored).is_null(), "{:?}", stored.spec);
    Ok(())
}

/// A bad certificate or key stops the controller at start, naming the flag.
#[test]
fn bad_certificates_stop_the_controller() -> Result<()> {
    let kubeconfig = kubeconfig_path()?;
    let dir = tempfile::tempdir()?;
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n")?;
    let missing = dir.path().join("missing.pem");
    let certs = Certs::make()?;
    let tls_crt = certs.path("tls.crt");
    for (cert, key, flag) in [
        (&missing, &garbage, "--webhook-cert"),
        (&garbage, &garbage, "--webhook-cert"),
        (&tls_crt, &missing, "--webhook-key"),
        (&tls_crt, &garbage, "--webhook-key"),
    ] {
        let (status, err) = run_controller(&kubeconfig, dir.path(), cert, key)?;
        ensure!(!status.success(), "started with {}: {err}", cert.display());
        ensure!(err.contains(flag), "{flag} not named: {err}");
    }
    Ok(())
}

/// Runs the controller with these files and returns its exit status and stderr; a controller
/// that is still running after a minute (it accepted the files) is killed and reported.
fn run_controller(
    kubeconfig: &Path,
    dir: &Path,
    cert: &Path,
    key: &Path,
) -> Result<(std::process::ExitStatus, String)> {
    let log = dir.join("stderr.log");
    let mut child = Command::new(binary("fluid-csi-controller"))
        .args([
            "--kubernetes",
            "--webhook-listen",
            "127.0.0.1:0",
            "--webhook-cert",
        ])
        .arg(cert)
        .arg("--webhook-key")
        .arg(key)
        .arg("--endpoint")
        .arg(format!("unix://{}", dir.join("csi.sock").display()))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .env("KUBECONFIG", kubeconfig)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("starting fluid-csi-controller")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "the controller kept running with {} and {}: {}",
                cert.display(),
                key.display(),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Ok((status, std::fs::read_to_string(&log)?))
}
