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
credentialEndpoints: ["https://s3.internal:9000", "*.aliyuncs.com"]
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
  memBudget: 16GiB
  diskBudget: 2TiB
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

mod custom;
mod defaults;
mod validation;
