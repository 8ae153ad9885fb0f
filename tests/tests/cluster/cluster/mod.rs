//! The whole path a user takes, through a real kubelet, scheduler and csi-provisioner on the
//! single-node cluster of `scripts/services.sh up cluster`: `helm install` of the chart with the
//! image of this workspace, Datasets over a SeaweedFS bucket, pods that read them. The tests
//! share the node, so each holds the cluster for its whole run.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use fluid_tests::cluster::{Cluster, DRIVER, DatasetBucket, Namespace, RELEASE, RELEASE_NAMESPACE};
use fluid_tests::daemon::serving_pids;

const POD_TIMEOUT: Duration = Duration::from_secs(120);
/// Where the reader pods mount their volume; the Dataset's one mount is named `bucket`.
const MOUNT: &str = "/data";

fn setup() -> (std::sync::MutexGuard<'static, ()>, &'static Cluster) {
    let guard = Cluster::lock();
    let cluster = Cluster::get().unwrap();
    cluster.install().unwrap();
    (guard, cluster)
}

/// A credentials Secret, a Dataset over the bucket and its CacheRuntime (a memory tier).
fn dataset(c: &Cluster, ns: &str, name: &str, data: &DatasetBucket) -> Result<()> {
    let s = &data.server;
    c.apply(&format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: {name}-s3, namespace: {ns}}}
stringData: {{ak: {ak}, sk: {sk}}}
---
apiVersion: data.fluid.io/v1alpha1
kind: Dataset
metadata: {{name: {name}, namespace: {ns}}}
spec:
  mounts:
    - name: bucket
      mountPoint: s3://{bucket}/
      options: {{endpoint: "{endpoint}", region: {region}}}
      encryptOptions:
        - name: access-key
          valueFrom: {{secretKeyRef: {{name: {name}-s3, key: ak}}}}
        - name: secret-key
          valueFrom: {{secretKeyRef: {{name: {name}-s3, key: sk}}}}
---
apiVersion: data.fluid.io/v1alpha1
kind: CacheRuntime
metadata: {{name: {name}, namespace: {ns}}}
spec:
  tieredstore:
    levels:
      - {{mediumtype: MEM, quota: 256Mi}}
"#,
        ak = s.access_key,
        sk = s.secret_key,
        bucket = data.bucket.name,
        endpoint = c.s3_endpoint,
        region = s.region,
    ))?;
    wait_bound(c, ns, name)
}

fn wait_bound(c: &Cluster, ns: &str, pvc: &str) -> Result<()> {
    c.wait(&format!("PVC {ns}/{pvc} Bound"), POD_TIMEOUT, || {
        let phase = c
            .jsonpath(Some(ns), "pvc", pvc, "{.status.phase}")
            .unwrap_or_default();
        Ok((phase == "Bound").then_some(()))
    })
}

/// A busybox pod that mounts `claim` at [`MOUNT`] and runs `script`.
fn pod(c: &Cluster, ns: &str, name: &str, claim: &str, script: &str, labels: &str) -> Result<()> {
    c.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {ns}, labels: {{{labels}}}}}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
    - name: reader
      image: {image}
      imagePullPolicy: IfNotPresent
      command: ["sh", "-c", {script:?}]
      volumeMounts: [{{name: data, mountPath: {MOUNT}}}]
  volumes:
    - name: data
      persistentVolumeClaim: {{claimName: {claim}, readOnly: true}}
"#,
        image = c.busybox,
    ))?;
    Ok(())
}

/// Runs a pod that prints the checksums of every file of the Dataset's mount `bucket` and
/// exits; its log.
fn read_all_once(c: &Cluster, ns: &str, name: &str, claim: &str) -> Result<String> {
    checksums_pod(c, ns, name, claim, &format!("{MOUNT}/bucket"))
}

/// Runs a pod that prints the checksums of every file under `dir` of its volume and exits;
/// its log.
fn checksums_pod(c: &Cluster, ns: &str, name: &str, claim: &str, dir: &str) -> Result<String> {
    pod(c, ns, name, claim, &DatasetBucket::sum_command(dir), "")?;
    c.wait(&format!("pod {ns}/{name} Succeeded"), POD_TIMEOUT, || {
        let phase = c.jsonpath(Some(ns), "pod", name, "{.status.phase}")?;
        if phase == "Failed" {
            let logs = c.kubectl(&["logs", "-n", ns, name]).unwrap_or_default();
            bail!("pod {name} failed: {logs}");
        }
        if phase == "Succeeded" {
            return Ok(Some(()));
        }
        bail!("phase {phase:?}")
    })
    .with_context(|| c.events_of(ns, name))?;
    c.kubectl(&["logs", "-n", ns, name])
}

/// Waits for an event of `reason` about object `name` in `ns`; the events' messages.
fn event_messages(c: &Cluster, ns: &str, name: &str, reason: &str) -> Result<String> {
    let selector = format!("involvedObject.name={name},reason={reason}");
    c.wait(
        &format!("a {reason} event of {ns}/{name}"),
        POD_TIMEOUT,
        || {
            let m = c.kubectl(&[
                "get",
                "events",
                "-n",
                ns,
                "--field-selector",
                &selector,
                "-o",
                "jsonpath={.items[*].message}",
            ])?;
            Ok((!m.is_empty()).then_some(m))
        },
    )
}

fn delete_pod(c: &Cluster, ns: &str, name: &str) -> Result<()> {
    c.kubectl(&[
        "delete",
        "pod",
        "-n",
        ns,
        name,
        "--wait=true",
        "--timeout=60s",
    ])?;
    Ok(())
}

/// The daemon pid of the volume named `volume` (a Dataset PV's name, `objects::pv_name`), from
/// the node plugin's record on the host.
fn daemon_pid(volume: &str) -> Option<u32> {
    let text = std::fs::read_to_string(format!("/var/lib/fluid/node/{volume}/volume.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["pid"].as_u64().map(|p| p as u32)
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

mod pods;
mod tenants;
