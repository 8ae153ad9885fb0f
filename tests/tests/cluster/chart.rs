//! The Helm chart `deploy/charts/fluid`: rendered with `helm template` (default values and a
//! second, non-default set), linted with `helm lint --strict`, validated against the Kubernetes
//! JSON schemas (`kubernetes-validate --strict`) and by the test kube-apiserver (server-side
//! dry-run apply), with assertions on what the rendered objects say: the CSIDriver, the
//! StorageClass, the DaemonSet's mounts and flags, the binaries' command lines, RBAC.
//!
//! Needs `scripts/services.sh up helm` (helm, kubernetes-validate) and, for the dry-run test,
//! `scripts/services.sh up kube` plus `kubectl` on PATH.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result, bail, ensure};
use fluid_tests::services::{self, chart_dir, unique_name};
use k8s_openapi::serde::Deserialize;
use serde_json::{Value, json};

const DRIVER: &str = "fuse.csi.fluid.io";
/// The Kubernetes releases the schema check validates against: the oldest we document and
/// the test apiserver's.
const SCHEMA_VERSIONS: [&str; 2] = ["1.33.0", "1.37.0"];

/// Non-default values: two disk tiers (one whose directory holds a `:`) after a memory tier,
/// a moved kubelet dir, a nodeSelector, a hostPath controller state dir, a dataset StorageClass.
const CUSTOM_VALUES: &str = r#"
allowAmbientCredentials: true
fullnameOverride: fluid-custom
image:
  repository: registry.example.com/fluid
  tag: "1.2.3"
imagePullSecrets:
  - name: regcred
storageClass:
  name: fluid-imagenet
  dataset: imagenet
  isDefault: true
  parameters:
    subPath: train
controller:
  statsInterval: 1m
  stateDir:
    type: hostPath
    hostPath: /var/lib/fluid-custom/controller
node:
  kubeletDir: /var/lib/k0s/kubelet/
  logLevel: debug,kube=info
  stateDir: /var/lib/fluid-custom/node
  cachePort: 17788
  tiers:
    - mem:512MiB
    - ssd:/mnt/nvme0/fluid:100GiB,high=0.95,low=0.7
    - HDD:/data/hdd:cache/fluid:1TiB
  extraCacheDirs:
    - /mnt/nvme0/fluid
    - /var/cache/fluid-extra
  localRoots:
    - /data/datasets
    - /srv/shared
  nodeSelector:
    fluid.io/cache: "true"
  extraArgs:
    - --block-size=8MiB
"#;

struct Tools {
    helm: PathBuf,
    validate: PathBuf,
    /// HELM_{CACHE,CONFIG,DATA}_HOME, so helm never reads or writes the user's.
    home: tempfile::TempDir,
}

fn tool(name: &str, service: &str, var: &str) -> Result<PathBuf> {
    let path = PathBuf::from(services::var(service, var)?);
    if !path.is_file() {
        bail!(
            "{name} is not installed at {}; run `scripts/services.sh up {service}`",
            path.display()
        );
    }
    Ok(path)
}

fn tools() -> Tools {
    let get = || -> Result<Tools> {
        Ok(Tools {
            helm: tool("helm", "helm", "FLUID_HELM")?,
            validate: tool("kubernetes-validate", "helm", "FLUID_KUBERNETES_VALIDATE")?,
            home: tempfile::tempdir()?,
        })
    };
    get().unwrap_or_else(|e| panic!("{e:#}"))
}

/// Runs a command, feeding `stdin`; returns its output whatever the exit status.
fn run(cmd: &mut Command, stdin: Option<&str>) -> Result<Output> {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("piped stdin");
        let input = input.to_string();
        // A thread, so a child that writes a lot before reading all of stdin cannot deadlock.
        std::thread::spawn(move || pipe.write_all(input.as_bytes()));
    }
    child
        .wait_with_output()
        .with_context(|| format!("waiting for {what}"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Tools {
    fn helm(&self) -> Command {
        let mut c = Command::new(&self.helm);
        for v in ["HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"] {
            c.env(v, self.home.path());
        }
        c
    }

    /// `helm template` of the chart in `namespace`, with the values file `values` and extra
    /// helm flags; the rendered YAML or helm's error.
    fn template(
        &self,
        namespace: &str,
        values: Option<&Path>,
        include_crds: bool,
        flags: &[&str],
    ) -> Result<String, String> {
        let mut c = self.helm();
        c.args(["template", "fluid"])
            .arg(chart_dir())
            .args(["--namespace", namespace]);
        if let Some(v) = values {
            c.arg("--values").arg(v);
        }
        if include_crds {
            c.arg("--include-crds");
        }
        c.args(flags);
        let out = run(&mut c, None).map_err(|e| format!("{e:#}"))?;
        if out.status.success() {
            Ok(text(&out.stdout))
        } else {
            Err(text(&out.stderr))
        }
    }

    fn lint(&self, values: Option<&Path>) -> Result<()> {
        let mut c = self.helm();
        c.args(["lint", "--strict", "--namespace", "fluid-system"])
            .arg(chart_dir());
        if let Some(v) = values {
            c.arg("--values").arg(v);
        }
        let out = run(&mut c, None)?;
        ensure!(
            out.status.success(),
            "helm lint --strict failed:\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        Ok(())
    }

    /// kubernetes-validate --strict on a YAML stream; every document must pass against every
    /// version (a kind without a schema is only a warning there, so it counts as a failure here).
    fn validate(&self, yaml: &str, documents: usize) -> Result<()> {
        // A file, not stdin: it reads its input once per version.
        let file = self.home.path().join(unique_name("rendered") + ".yaml");
        std::fs::write(&file, yaml)?;
        let mut c = Command::new(&self.validate);
        c.arg("--strict");
        for v in SCHEMA_VERSIONS {
            c.args(["-k", v]);
        }
        c.arg(&file);
        let out = run(&mut c, None)?;
        let _ = std::fs::remove_file(&file);
        let report = format!("{}{}", text(&out.stdout), text(&out.stderr));
        ensure!(
            out.status.success(),
            "kubernetes-validate failed:\n{report}"
        );
        let passed = report
            .lines()
            .filter(|l| l.contains(" passed for "))
            .count();
        ensure!(
            passed == documents * SCHEMA_VERSIONS.len() && !report.contains("WARN"),
            "kubernetes-validate: {passed} passes for {documents} documents x {} versions:\n{report}",
            SCHEMA_VERSIONS.len()
        );
        Ok(())
    }
}

/// The documents of a YAML stream (empty ones dropped).
fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| Value::deserialize(d).expect("rendered YAML parses"))
        .filter(|v| !v.is_null())
        .collect()
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn one<'a>(docs: &'a [Value], k: &str, name: &str) -> &'a Value {
    let found: Vec<_> = kind(docs, k)
        .into_iter()
        .filter(|d| d["metadata"]["name"] == name)
        .collect();
    assert_eq!(found.len(), 1, "exactly one {k} {name}");
    found[0]
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| {
            s.as_str()
                .unwrap_or_else(|| panic!("not a string: {s}"))
                .to_string()
        })
        .collect()
}

fn container<'a>(pod_spec: &'a Value, name: &str) -> &'a Value {
    pod_spec["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// The names of a pod spec's containers, in order.
fn container_names(pod_spec: &Value) -> Vec<&str> {
    pod_spec["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect()
}

fn volume<'a>(pod_spec: &'a Value, name: &str) -> &'a Value {
    pod_spec["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no volume {name}"))
}

/// The volumeMount of `c` at `path`, with the hostPath of its volume.
fn mount_at<'a>(pod_spec: &'a Value, c: &'a Value, path: &str) -> (&'a Value, &'a Value) {
    let m = c["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
        .iter()
        .find(|m| m["mountPath"] == path)
        .unwrap_or_else(|| panic!("container {} mounts nothing at {path}", c["name"]));
    let vol = volume(pod_spec, m["name"].as_str().unwrap());
    (m, &vol["hostPath"])
}

/// The RBAC rules granted to ServiceAccount `sa` of `namespace` by the rendered bindings.
fn rules_of(docs: &[Value], namespace: &str, sa: &str) -> Vec<Value> {
    let mut rules = Vec::new();
    for b in docs
        .iter()
        .filter(|d| d["kind"] == "ClusterRoleBinding" || d["kind"] == "RoleBinding")
    {
        let bound = b["subjects"].as_array().into_iter().flatten().any(|s| {
            s["kind"] == "ServiceAccount" && s["name"] == sa && s["namespace"] == namespace
        });
        if bound {
            let role = one(
                docs,
                b["roleRef"]["kind"].as_str().unwrap(),
                b["roleRef"]["name"].as_str().unwrap(),
            );
            rules.extend(role["rules"].as_array().unwrap().iter().cloned());
        }
    }
    rules
}

/// Whether `rules` allow `verb` on `resource` of API group `group`.
fn allows(rules: &[Value], group: &str, resource: &str, verb: &str) -> bool {
    let has = |v: &Value, x: &str| strs(v).iter().any(|s| s == x || s == "*");
    rules.iter().any(|r| {
        has(&r["apiGroups"], group) && has(&r["resources"], resource) && has(&r["verbs"], verb)
    })
}

fn write_values(dir: &Path) -> PathBuf {
    let path = dir.join("custom-values.yaml");
    std::fs::write(&path, CUSTOM_VALUES).unwrap();
    path
}

#[test]
fn default_values_render_the_documented_objects() {
    let t = tools();
    let ns = "fluid-system";
    let docs = documents(&t.template(ns, None, false, &[]).unwrap());

    // Every object this chart makes, and each namespaced one in the release's namespace.
    let kinds: BTreeSet<String> = docs
        .iter()
        .map(|d| {
            format!(
                "{}/{}",
                d["kind"].as_str().unwrap(),
                d["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    let want: BTreeSet<String> = [
        "CSIDriver/fuse.csi.fluid.io",
        "StorageClass/fluid",
        "ServiceAccount/fluid-controller",
        "ClusterRole/fluid-controller",
        "ClusterRoleBinding/fluid-controller",
        "Role/fluid-controller",
        "RoleBinding/fluid-controller",
        "Deployment/fluid-controller",
        "ServiceAccount/fluid-node",
        "ClusterRole/fluid-node",
        "ClusterRoleBinding/fluid-node",
        "DaemonSet/fluid-node",
        "Secret/fluid-webhook-tls",
        "Service/fluid-webhook",
        "MutatingWebhookConfiguration/fluid-webhook",
        "Secret/fluid-cache-token",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(kinds, want);

    // The cache endpoints' token: 48 generated characters (64 in base64), given to the node
    // plugin and the controller from the Secret, never in their command lines.
    let token = one(&docs, "Secret", "fluid-cache-token");
    assert_eq!(token["data"]["token"].as_str().map(str::len), Some(64));
    let from_secret = json!({"name": "FLUID_CACHE_TOKEN", "valueFrom": {"secretKeyRef": {"name": "fluid-cache-token", "key": "token"}}});
    for (kind_, name, c) in [
        ("Deployment", "fluid-controller", "controller"),
        ("DaemonSet", "fluid-node", "node"),
    ] {
        let pod = &one(&docs, kind_, name)["spec"]["template"]["spec"];
        let env = container(pod, c)["env"].as_array().unwrap();
        assert!(env.contains(&from_secret), "{name}: {env:?}");
    }
    for d in &docs {
        let cluster_scoped = [
            "CSIDriver",
            "StorageClass",
            "ClusterRole",
            "ClusterRoleBinding",
            "MutatingWebhookConfiguration",
        ]
        .contains(&d["kind"].as_str().unwrap());
        let want_ns = if cluster_scoped {
            Value::Null
        } else {
            json!(ns)
        };
        assert_eq!(
            d["metadata"]["namespace"], want_ns,
            "{}",
            d["metadata"]["name"]
        );
    }

    let driver = one(&docs, "CSIDriver", DRIVER);
    assert_eq!(driver["spec"]["attachRequired"], json!(false));
    assert_eq!(driver["spec"]["podInfoOnMount"], json!(true));
    assert_eq!(
        driver["spec"]["volumeLifecycleModes"],
        json!(["Persistent"])
    );
    assert_eq!(driver["spec"]["fsGroupPolicy"], json!("None"));

    let sc = one(&docs, "StorageClass", "fluid");
    assert_eq!(sc["provisioner"], json!(DRIVER));
    assert_eq!(sc["reclaimPolicy"], json!("Delete"));
    assert_eq!(sc["volumeBindingMode"], json!("Immediate"));
    assert_eq!(
        sc["parameters"],
        Value::Null,
        "dataset is optional: no parameters by default"
    );
    assert_eq!(
        sc["metadata"]["annotations"],
        Value::Null,
        "not the default class"
    );

    // The controller: its command line, the provisioner with the PVC metadata it needs, the
    // liveness probe wired to the controller's own /healthz port.
    let dep = one(&docs, "Deployment", "fluid-controller");
    let pod = &dep["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], json!("fluid-controller"));
    let ctl = container(pod, "controller");
    assert_eq!(ctl["image"], json!("ghcr.io/fluid-rs/fluid:0.1.0"));
    assert_eq!(ctl["command"], json!(["fluid-csi-controller"]));
    assert_eq!(
        strs(&ctl["args"]),
        [
            "--endpoint=unix:///csi/csi.sock",
            "--state-dir=/var/lib/fluid/controller",
            "--kubernetes",
            "--stats-interval=30s",
            "--health-listen=0.0.0.0:9808",
            "--webhook-listen=0.0.0.0:9443",
        ]
    );
    let prov = container(pod, "csi-provisioner");
    assert!(
        prov["image"]
            .as_str()
            .unwrap()
            .starts_with("registry.k8s.io/sig-storage/csi-provisioner:v6.")
    );
    let prov_args = strs(&prov["args"]);
    for a in [
        "--csi-address=/csi/csi.sock",
        "--extra-create-metadata",
        "--leader-election",
    ] {
        assert!(
            prov_args.iter().any(|x| x == a),
            "provisioner lacks {a}: {prov_args:?}"
        );
    }
    // The controller answers its liveness probe itself: no livenessprobe sidecar.
    let names = container_names(pod);
    assert_eq!(names, ["controller", "csi-provisioner"]);
    assert_eq!(ctl["livenessProbe"]["httpGet"]["port"], json!("healthz"));
    assert_eq!(
        ctl["ports"][0],
        json!({"name": "healthz", "containerPort": 9808, "protocol": "TCP"})
    );
    assert!(volume(pod, "state-dir").get("emptyDir").is_some());
    for c in [ctl, prov] {
        assert_eq!(
            c["volumeMounts"][0],
            json!({"name": "socket-dir", "mountPath": "/csi"})
        );
    }

    // The node plugin.
    let ds = one(&docs, "DaemonSet", "fluid-node");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], json!("fluid-node"));
    assert_eq!(pod["hostNetwork"], json!(true));
    // The daemons leave the pod's cgroup through the host's PID 1 (--daemon-cgroup).
    assert_eq!(pod["hostPID"], json!(true));
    assert_eq!(pod["dnsPolicy"], json!("ClusterFirstWithHostNet"));
    assert_eq!(pod["priorityClassName"], json!("system-node-critical"));
    assert_eq!(pod["tolerations"], json!([{"operator": "Exists"}]));
    assert_eq!(pod["nodeSelector"], json!({"kubernetes.io/os": "linux"}));
    let node = container(pod, "node");
    assert_eq!(node["command"], json!(["fluid-csi-node"]));
    assert_eq!(
        strs(&node["args"]),
        [
            "--endpoint=unix:///csi/csi.sock",
            "--nodeid=$(NODE_ID)",
            "--state-dir=/var/lib/fluid/node",
            "--kubernetes",
            "--cache-endpoint=tcp://0.0.0.0:7788",
            "--cache-advertise=$(NODE_IP):7788",
            "--health-listen=0.0.0.0:9818",
            "--registration-dir=/registration",
            "--kubelet-registration-path=/var/lib/kubelet/plugins/fuse.csi.fluid.io/csi.sock",
            "--daemon-cgroup=fluid-fuse",
            "--host-cgroup-root=/host/sys/fs/cgroup",
            "--tier=mem:1GiB",
        ]
    );
    let env = node["env"].as_array().unwrap();
    assert!(env.contains(
        &json!({"name": "NODE_ID", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}})
    ));
    assert!(env.contains(
        &json!({"name": "NODE_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}})
    ));
    assert!(env.contains(&json!({"name": "FLUID_LOG", "value": "info"})));
    assert_eq!(node["securityContext"]["privileged"], json!(true));
    // Host paths at the same path in the container (kubelet passes host paths in CSI calls),
    // with the mounts made there propagated back to the host.
    for path in [
        "/var/lib/kubelet/pods",
        "/var/lib/kubelet/plugins/kubernetes.io/csi",
        "/var/lib/fluid/node",
    ] {
        let (m, hp) = mount_at(pod, node, path);
        assert_eq!(m["mountPropagation"], json!("Bidirectional"), "{path}");
        assert_eq!(hp["path"], json!(path));
    }
    let (_, fuse) = mount_at(pod, node, "/dev/fuse");
    assert_eq!(*fuse, json!({"path": "/dev/fuse", "type": "CharDevice"}));
    let (m, sock) = mount_at(pod, node, "/csi");
    assert_eq!(m.get("mountPropagation"), None);
    assert_eq!(
        sock["path"],
        json!("/var/lib/kubelet/plugins/fuse.csi.fluid.io")
    );
    // The mem tier has no directory: no cache volume.
    assert!(
        !pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["name"].as_str().unwrap().starts_with("cache-"))
    );
    // The plugin answers its liveness probe and registers itself with the kubelet: no
    // livenessprobe or registrar sidecar.
    let (_, regdir) = mount_at(pod, node, "/registration");
    assert_eq!(regdir["path"], json!("/var/lib/kubelet/plugins_registry"));
    let names = container_names(pod);
    assert_eq!(names, ["node"]);
    assert_eq!(
        node["livenessProbe"]["httpGet"],
        json!({"path": "/healthz", "port": "healthz"})
    );
    let ports = node["ports"].as_array().unwrap();
    assert!(ports.contains(&json!({"name": "healthz", "containerPort": 9818, "protocol": "TCP"})));
    assert!(ports.contains(&json!({"name": "cache", "containerPort": 7788, "protocol": "TCP"})));

    // RBAC: the node plugin may only read and patch Nodes (its labels), nothing else.
    let node_rules = rules_of(&docs, ns, "fluid-node");
    assert_eq!(
        node_rules,
        [json!({"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch"]})]
    );
    assert!(!allows(&node_rules, "", "secrets", "get"));
    // The controller gets what its reconcilers and the provisioner use.
    let ctl_rules = rules_of(&docs, ns, "fluid-controller");
    for (group, resources, verbs) in [
        (
            "data.fluid.io",
            &["datasets", "cacheruntimes"][..],
            &["get", "list", "watch", "update", "patch"][..],
        ),
        (
            "data.fluid.io",
            &[
                "datasets/status",
                "cacheruntimes/status",
                "dataloads/status",
            ],
            &["get", "update", "patch"],
        ),
        (
            "data.fluid.io",
            &["dataloads"],
            &["get", "list", "watch", "patch", "delete"],
        ),
        (
            "",
            &["persistentvolumes", "persistentvolumeclaims", "secrets"],
            &[
                "get", "list", "watch", "create", "update", "patch", "delete",
            ],
        ),
        ("", &["pods", "nodes"], &["get", "list", "watch"]),
        (
            "",
            &["events"],
            &["create", "patch", "list", "watch", "update"],
        ),
        ("events.k8s.io", &["events"], &["create", "patch"]),
        (
            "storage.k8s.io",
            &["storageclasses", "csinodes", "volumeattachments"],
            &["get", "list", "watch"],
        ),
        (
            "coordination.k8s.io",
            &["leases"],
            &["get", "list", "watch", "create", "update", "delete"],
        ),
    ] {
        for r in resources {
            for v in verbs {
                assert!(
                    allows(&ctl_rules, group, r, v),
                    "controller may not {v} {group}/{r}"
                );
            }
        }
    }
    // ... and no more: no wildcards, Leases only in its own namespace, Nodes read-only.
    assert!(!ctl_rules.iter().any(|r| r.to_string().contains('*')));
    assert!(!allows(&ctl_rules, "", "nodes", "patch"));
    assert!(!allows(&ctl_rules, "", "pods", "delete"));
    let lease_role = one(&docs, "Role", "fluid-controller");
    assert!(allows(
        lease_role["rules"].as_array().unwrap(),
        "coordination.k8s.io",
        "leases",
        "update"
    ));
    assert!(!allows(
        one(&docs, "ClusterRole", "fluid-controller")["rules"]
            .as_array()
            .unwrap(),
        "coordination.k8s.io",
        "leases",
        "get"
    ));
}

#[test]
fn custom_values_render_tiers_kubelet_dir_and_node_selector() {
    let t = tools();
    let values = write_values(t.home.path());
    let ns = "fluid-custom-ns";
    let yaml = t.template(ns, Some(&values), false, &[]).unwrap();
    let docs = documents(&yaml);

    let sc = one(&docs, "StorageClass", "fluid-imagenet");
    assert_eq!(sc["provisioner"], json!(DRIVER));
    assert_eq!(
        sc["parameters"],
        json!({
            "dataset": "imagenet",
            "subPath": "train",
            // The Secret the controller makes from the Dataset's encryptOptions.
            "csi.storage.k8s.io/node-stage-secret-name": "imagenet-fluid-credentials",
            "csi.storage.k8s.io/node-stage-secret-namespace": "${pvc.namespace}"
        })
    );
    assert_eq!(
        sc["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"],
        json!("true")
    );

    let dep = one(&docs, "Deployment", "fluid-custom-controller");
    let pod = &dep["spec"]["template"]["spec"];
    assert_eq!(pod["imagePullSecrets"], json!([{"name": "regcred"}]));
    let ctl = container(pod, "controller");
    assert_eq!(ctl["image"], json!("registry.example.com/fluid:1.2.3"));
    assert!(strs(&ctl["args"]).contains(&"--stats-interval=1m".to_string()));
    assert!(strs(&ctl["args"]).contains(&"--allow-ambient-credentials".to_string()));
    assert_eq!(
        volume(pod, "state-dir")["hostPath"],
        json!({"path": "/var/lib/fluid-custom/controller", "type": "DirectoryOrCreate"})
    );

    let ds = one(&docs, "DaemonSet", "fluid-custom-node");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["imagePullSecrets"], json!([{"name": "regcred"}]));
    // Helm merges maps with the defaults: the OS selector stays unless set to null.
    assert_eq!(
        pod["nodeSelector"],
        json!({"fluid.io/cache": "true", "kubernetes.io/os": "linux"})
    );
    assert_eq!(pod["serviceAccountName"], json!("fluid-custom-node"));
    let node = container(pod, "node");
    assert_eq!(node["image"], json!("registry.example.com/fluid:1.2.3"));
    // The one log variable the node plugin reads and hands to its fluid-fuse daemons.
    let env = node["env"].as_array().unwrap();
    assert!(
        env.contains(&json!({"name": "FLUID_LOG", "value": "debug,kube=info"})),
        "{env:?}"
    );
    assert_eq!(
        strs(&node["args"]),
        [
            "--endpoint=unix:///csi/csi.sock",
            "--nodeid=$(NODE_ID)",
            "--state-dir=/var/lib/fluid-custom/node",
            "--kubernetes",
            "--cache-endpoint=tcp://0.0.0.0:17788",
            "--cache-advertise=$(NODE_IP):17788",
            "--health-listen=0.0.0.0:9818",
            "--registration-dir=/registration",
            "--kubelet-registration-path=/var/lib/k0s/kubelet/plugins/fuse.csi.fluid.io/csi.sock",
            "--daemon-cgroup=fluid-fuse",
            "--host-cgroup-root=/host/sys/fs/cgroup",
            "--tier=mem:512MiB",
            "--tier=ssd:/mnt/nvme0/fluid:100GiB,high=0.95,low=0.7",
            "--tier=HDD:/data/hdd:cache/fluid:1TiB",
            "--local-roots=/data/datasets,/srv/shared",
            "--allow-ambient-credentials",
            "--block-size=8MiB",
        ]
    );
    // The directories local:// Datasets may use, read-only, at the same path.
    for dir in ["/data/datasets", "/srv/shared"] {
        let (m, hp) = mount_at(pod, node, dir);
        assert!(m["name"].as_str().unwrap().starts_with("local-root-"));
        assert_eq!(m["readOnly"], json!(true));
        assert_eq!(*hp, json!({"path": dir, "type": "Directory"}));
    }
    // Each disk tier's directory (and each extra one) is a hostPath at the same path, once.
    let cache_dirs = [
        "/mnt/nvme0/fluid",
        "/data/hdd:cache/fluid",
        "/var/cache/fluid-extra",
    ];
    for dir in cache_dirs {
        let (m, hp) = mount_at(pod, node, dir);
        assert!(m["name"].as_str().unwrap().starts_with("cache-"));
        assert_eq!(*hp, json!({"path": dir, "type": "DirectoryOrCreate"}));
    }
    let cache_vols = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["name"].as_str().unwrap().starts_with("cache-"))
        .count();
    assert_eq!(
        cache_vols,
        cache_dirs.len(),
        "one volume per distinct directory"
    );

    // Everything kubelet-related moved to the custom kubelet dir (trailing slash dropped).
    let k = "/var/lib/k0s/kubelet";
    for path in [
        format!("{k}/pods"),
        format!("{k}/plugins/kubernetes.io/csi"),
    ] {
        let (m, hp) = mount_at(pod, node, &path);
        assert_eq!(m["mountPropagation"], json!("Bidirectional"));
        assert_eq!(hp["path"], json!(path));
    }
    let (m, hp) = mount_at(pod, node, "/var/lib/fluid-custom/node");
    assert_eq!(m["mountPropagation"], json!("Bidirectional"));
    assert_eq!(hp["path"], json!("/var/lib/fluid-custom/node"));
    assert_eq!(
        volume(pod, "socket-dir")["hostPath"]["path"],
        json!(format!("{k}/plugins/{DRIVER}"))
    );
    assert_eq!(
        volume(pod, "registration-dir")["hostPath"]["path"],
        json!(format!("{k}/plugins_registry"))
    );
    assert!(strs(&node["args"]).contains(&format!(
        "--kubelet-registration-path={k}/plugins/{DRIVER}/csi.sock"
    )));
    let ds_text = serde_json::to_string(ds).unwrap();
    assert!(
        !ds_text.contains("/var/lib/kubelet"),
        "default kubelet dir left in the DaemonSet"
    );
    assert!(!ds_text.contains("k0s/kubelet//"), "double slash");

    // Names follow fullnameOverride; RBAC binds the renamed accounts the same way.
    assert_eq!(
        rules_of(&docs, ns, "fluid-custom-node"),
        [json!({"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch"]})]
    );
    assert!(allows(
        &rules_of(&docs, ns, "fluid-custom-controller"),
        "",
        "secrets",
        "create"
    ));
}

/// With `node.daemonCgroup` empty the daemons stay in the plugin pod: no hostPID, no host
/// cgroups mounted, no flag.
#[test]
fn an_empty_daemon_cgroup_keeps_the_daemons_in_the_plugin_pod() {
    let t = tools();
    let yaml = t
        .template(
            "fluid-system",
            None,
            false,
            &["--set", "node.daemonCgroup="],
        )
        .unwrap();
    let docs = documents(&yaml);
    let pod = &one(&docs, "DaemonSet", "fluid-node")["spec"]["template"]["spec"];
    assert_eq!(pod.get("hostPID"), None);
    let args = strs(&container(pod, "node")["args"]);
    assert!(!args.iter().any(|a| a.contains("cgroup")), "{args:?}");
    let volumes = pod["volumes"].as_array().unwrap();
    assert!(
        volumes.iter().all(|v| v["name"] != json!("host-cgroup")),
        "{volumes:?}"
    );
}

#[test]
fn bad_values_are_refused_with_a_message() {
    let t = tools();
    for (flag, message) in [
        (r#"node.tiers=["nvme:/x:1GiB"]"#, "unknown medium \"nvme\""),
        (
            r#"node.tiers=["ssd:cache:1GiB"]"#,
            "must be an absolute path",
        ),
        (r#"node.tiers=["ssd:100GiB"]"#, "expected ssd:DIR:SIZE"),
        (
            r#"node.tiers=["mem:/x:1GiB"]"#,
            "a mem tier takes only a size",
        ),
        (r#"node.tiers=[]"#, "give at least one tier"),
        (
            r#"node.stateDir="/var/lib/a-very-long-directory-name/for/the/node/state""#,
            "longer than 45",
        ),
        (
            r#"controller.stateDir.type="pvc""#,
            "use emptyDir or hostPath",
        ),
        (
            r#"storageClass={"dataset":"a","parameters":{"mountPoint":"s3://b/"}}"#,
            "not both",
        ),
        (
            r#"node.kubeletDir="var/lib/kubelet""#,
            "must be an absolute path",
        ),
    ] {
        let err = t
            .template("fluid-system", None, false, &["--set-json", flag])
            .expect_err(flag);
        assert!(
            err.contains(message),
            "{flag}: wanted {message:?} in:\n{err}"
        );
    }
}

/// Both value sets: `helm lint --strict`, then every rendered document (CRDs included) against
/// the Kubernetes JSON schemas, strictly (unknown fields fail).
#[test]
fn rendered_manifests_pass_lint_and_schema_validation() {
    let t = tools();
    let values = write_values(t.home.path());
    for v in [None, Some(values.as_path())] {
        t.lint(v).unwrap();
        let yaml = t.template("fluid-system", v, true, &[]).unwrap();
        let docs = documents(&yaml);
        assert_eq!(kind(&docs, "CustomResourceDefinition").len(), 3);
        t.validate(&yaml, docs.len()).unwrap();
    }
    // The check is strict: an unknown field fails it.
    let bad = "apiVersion: storage.k8s.io/v1\nkind: CSIDriver\nmetadata: {name: x}\nspec: {attachRequired: false, bogus: 1}\n";
    let err = t.validate(bad, 1).expect_err("an unknown field must fail");
    assert!(format!("{err:#}").contains("bogus"), "{err:#}");
}

/// Both value sets through the real kube-apiserver: server-side apply in dry-run mode, in a
/// fresh namespace (the test apiserver never finishes deleting one, so none is reused), CRDs
/// included. Its validation (field schemas, strict decoding, RBAC, admission) must accept all.
#[test]
fn rendered_manifests_pass_the_api_servers_dry_run() {
    let t = tools();
    let kubeconfig = services::var("kube", "FLUID_KUBECONFIG").unwrap_or_else(|e| panic!("{e:#}"));
    let apiserver =
        services::var("kube", "FLUID_KUBE_APISERVER").unwrap_or_else(|e| panic!("{e:#}"));
    services::require_reachable("kube", &apiserver).unwrap_or_else(|e| panic!("{e:#}"));
    let kubectl = |args: &[&str], stdin: Option<&str>| -> Output {
        run(
            Command::new("kubectl")
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .args(args),
            stdin,
        )
        .unwrap_or_else(|e| panic!("{e:#} (kubectl must be on PATH)"))
    };
    let values = write_values(t.home.path());
    for v in [None, Some(values.as_path())] {
        let ns = unique_name("fluid-chart");
        let out = kubectl(&["create", "namespace", &ns], None);
        assert!(
            out.status.success(),
            "creating namespace {ns}: {}",
            text(&out.stderr)
        );
        let yaml = t.template(&ns, v, true, &[]).unwrap();
        let docs = documents(&yaml);
        let out = kubectl(
            &[
                "apply",
                "--server-side",
                "--force-conflicts",
                "--field-manager=fluid-chart-test",
                "--dry-run=server",
                "--validate=strict",
                "-f",
                "-",
            ],
            Some(&yaml),
        );
        let report = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(
            out.status.success(),
            "server dry-run refused the chart ({v:?}):\n{report}"
        );
        let applied = report
            .lines()
            .filter(|l| l.ends_with("serverside-applied (server dry run)"))
            .count();
        assert_eq!(applied, docs.len(), "every document applied:\n{report}");
    }
}

/// Every value of values.yaml has a `# --` comment there (a documented map counts for what is
/// inside it) and a row in the chart's README.
#[test]
fn every_value_is_documented() {
    let values = std::fs::read_to_string(chart_dir().join("values.yaml")).unwrap();
    let readme = std::fs::read_to_string(chart_dir().join("README.md")).unwrap();

    // Dotted paths of the keys whose comment block holds a `# --` line.
    let mut documented = BTreeSet::new();
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut comments: Vec<&str> = Vec::new();
    for line in values.lines() {
        let body = line.trim_start();
        let indent = line.len() - body.len();
        if body.starts_with('#') {
            comments.push(body);
            continue;
        }
        let key = body
            .split_once(':')
            .map(|(k, _)| k)
            .filter(|k| !k.is_empty() && !k.starts_with('-') && !k.contains(' '));
        if let Some(key) = key {
            stack.retain(|(i, _)| *i < indent);
            let path = stack
                .iter()
                .map(|(_, k)| k.as_str())
                .chain([key])
                .collect::<Vec<_>>()
                .join(".");
            if comments.iter().any(|c| c.starts_with("# --")) {
                documented.insert(path.clone());
            }
            stack.push((indent, key.to_string()));
        }
        comments.clear();
    }

    fn leaves(v: &Value, path: String, out: &mut Vec<String>) {
        match v.as_object() {
            Some(m) if !m.is_empty() => {
                for (k, v) in m {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    leaves(v, p, out);
                }
            }
            _ => out.push(path),
        }
    }
    let parsed: Value = serde_yaml::from_str(&values).unwrap();
    let mut all = Vec::new();
    leaves(&parsed, String::new(), &mut all);
    assert!(all.len() > 40, "{all:?}");
    for leaf in &all {
        let covered = documented
            .iter()
            .any(|d| leaf == d || leaf.starts_with(&format!("{d}.")));
        assert!(covered, "values.yaml: {leaf} has no `# --` comment");
    }
    for d in &documented {
        assert!(
            readme.contains(&format!("| `{d}` |")),
            "README.md has no row for `{d}`"
        );
    }
}

/// The scheduling webhook: the configuration trusts the CA that signed the Secret's certificate,
/// calls the controller's Service, never blocks pods, skips kube-system; the controller mounts
/// the Secret where its --webhook-cert/--webhook-key defaults point. Disabled: none of it.
#[test]
fn webhook_objects_fit_together() {
    let t = tools();
    let ns = "fluid-system";
    let docs = documents(&t.template(ns, None, false, &[]).unwrap());
    let secret = one(&docs, "Secret", "fluid-webhook-tls");
    assert_eq!(secret["type"], json!("kubernetes.io/tls"));
    for k in ["tls.crt", "tls.key", "ca.crt"] {
        assert!(
            secret["data"][k].as_str().is_some_and(|v| !v.is_empty()),
            "{k}"
        );
    }
    let mwc = one(&docs, "MutatingWebhookConfiguration", "fluid-webhook");
    let hook = &mwc["webhooks"][0];
    assert_eq!(hook["clientConfig"]["caBundle"], secret["data"]["ca.crt"]);
    assert_eq!(
        hook["clientConfig"]["service"],
        json!({"name": "fluid-webhook", "namespace": ns, "path": "/mutate-pods", "port": 443})
    );
    assert_eq!(hook["failurePolicy"], json!("Ignore"));
    assert_eq!(hook["sideEffects"], json!("None"));
    assert_eq!(hook["timeoutSeconds"], json!(5));
    assert_eq!(hook["admissionReviewVersions"], json!(["v1"]));
    assert_eq!(
        hook["rules"],
        json!([{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"], "scope": "Namespaced"}])
    );
    let skipped = &hook["namespaceSelector"]["matchExpressions"][0];
    assert_eq!(skipped["key"], json!("kubernetes.io/metadata.name"));
    assert_eq!(skipped["operator"], json!("NotIn"));
    assert!(strs(&skipped["values"]).contains(&"kube-system".to_string()));

    let svc = one(&docs, "Service", "fluid-webhook");
    assert_eq!(
        svc["spec"]["ports"],
        json!([{"name": "webhook", "port": 443, "targetPort": "webhook", "protocol": "TCP"}])
    );
    let dep = one(&docs, "Deployment", "fluid-controller");
    let pod = &dep["spec"]["template"]["spec"];
    for (k, v) in svc["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&dep["spec"]["template"]["metadata"]["labels"][k], v, "{k}");
    }
    let ctl = container(pod, "controller");
    assert!(
        ctl["ports"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": "webhook", "containerPort": 9443, "protocol": "TCP"}))
    );
    let mount = ctl["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == "/etc/fluid/webhook")
        .expect("the webhook certificate is mounted");
    assert_eq!(mount["readOnly"], json!(true));
    assert_eq!(
        volume(pod, mount["name"].as_str().unwrap())["secret"]["secretName"],
        json!("fluid-webhook-tls")
    );
    assert_eq!(ctl["readinessProbe"]["httpGet"]["scheme"], json!("HTTPS"));

    let docs = documents(
        &t.template(ns, None, false, &["--set", "webhook.enabled=false"])
            .unwrap(),
    );
    let text = serde_json::to_string(&docs).unwrap();
    assert!(
        !text.contains("webhook"),
        "webhook parts left when disabled"
    );

    let err = t
        .template(ns, None, false, &["--set", "webhook.timeoutSeconds=0"])
        .expect_err("timeout 0");
    assert!(err.contains("use 1 to 30"), "{err}");
}
