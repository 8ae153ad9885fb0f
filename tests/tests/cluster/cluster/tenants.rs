//! What a hostile tenant tries: the node plugin's token, local:// Datasets over the node's files.

use super::*;

/// Issue 27, hole 7: RBAC lets the node plugin patch every Node. With its own service-account
/// token (read from the host, as a compromised plugin would use it) it may change Fluid's
/// labels and annotations on its own Node and nothing else: no other label or annotation, no
/// taint, no other Node.
#[test]
fn the_node_plugins_token_changes_only_fluid_labels_of_its_own_node() {
    let (_g, c) = setup();
    let uid = c
        .kubectl(&[
            "get",
            "pod",
            "-n",
            RELEASE_NAMESPACE,
            "-l",
            "app.kubernetes.io/component=node",
            "-o",
            "jsonpath={.items[0].metadata.uid}",
        ])
        .unwrap();
    let projected = format!(
        "/var/lib/kubelet/pods/{}/volumes/kubernetes.io~projected",
        uid.trim()
    );
    let token = std::fs::read_dir(&projected)
        .unwrap_or_else(|e| panic!("{projected}: {e}"))
        .flatten()
        .find_map(|d| std::fs::read_to_string(d.path().join("token")).ok())
        .expect("the node plugin's service-account token");
    let server = c
        .kubectl(&[
            "config",
            "view",
            "--minify",
            "-o",
            "jsonpath={.clusters[0].cluster.server}",
        ])
        .unwrap();
    let as_plugin = |args: &[&str]| {
        let out = std::process::Command::new("kubectl")
            .args(["--kubeconfig=/dev/null", "--insecure-skip-tls-verify"])
            .arg(format!("--server={}", server.trim()))
            .arg(format!("--token={}", token.trim()))
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    let node = c.node.as_str();
    let (ok, out) = as_plugin(&["label", "node", node, "fluid.io/s-e2e-probe=true"]);
    assert!(ok, "its own Node's fluid.io/ label: {out}");
    let (ok, out) = as_plugin(&["label", "node", node, "fluid.io/s-e2e-probe-"]);
    assert!(ok, "{out}");
    for (args, why) in [
        (
            vec!["label", "node", node, "e2e-steal=true"],
            "fluid.io/ labels",
        ),
        (
            vec!["annotate", "node", node, "e2e-steal=true"],
            "fluid.io/ annotations",
        ),
        (
            vec!["taint", "node", node, "e2e-steal=x:NoSchedule"],
            "spec",
        ),
    ] {
        let (ok, out) = as_plugin(&args);
        assert!(!ok && out.contains(why), "{args:?}: {out}");
    }
    let other = format!("e2e-other-{}", std::process::id());
    c.apply(&format!(
        "apiVersion: v1\nkind: Node\nmetadata: {{name: {other}}}\n"
    ))
    .unwrap();
    let (ok, out) = as_plugin(&["label", "node", &other, "fluid.io/s-e2e-probe=true"]);
    let _ = c.kubectl(&["delete", "node", &other]);
    assert!(!ok && out.contains("only the Node it runs on"), "{out}");
}

/// Issue 27, hole 1, as it was found on this cluster: a tenant's Dataset over
/// `local:///var/lib/kubelet/pods` let its pod read other pods' service-account tokens. With
/// the chart's defaults (no local roots) the controller refuses it, saying why on the Dataset
/// and in an Event, and no claim is made for a pod to mount. (The node plugin refuses such a
/// volume too, whoever asks: csi_node::policy.)
#[test]
fn a_tenants_local_dataset_does_not_reach_the_nodes_files() {
    let (_g, c) = setup();
    let ns = c.namespace("e2e-host").unwrap();
    c.apply(&format!(
        r#"apiVersion: data.fluid.io/v1alpha1
kind: Dataset
metadata: {{name: host, namespace: {ns}}}
spec:
  mounts:
    - {{name: pods, mountPoint: "local:///var/lib/kubelet/pods"}}
---
apiVersion: data.fluid.io/v1alpha1
kind: CacheRuntime
metadata: {{name: host, namespace: {ns}}}
spec:
  tieredstore:
    levels:
      - {{mediumtype: MEM, quota: 64Mi}}
"#,
        ns = ns.name
    ))
    .unwrap();
    let message = c
        .wait("the Dataset Failed", POD_TIMEOUT, || {
            let phase = c.jsonpath(Some(&ns.name), "dataset", "host", "{.status.phase}")?;
            if phase != "Failed" {
                return Ok(None);
            }
            let path = "{.status.conditions[?(@.type==\"Ready\")].message}";
            Ok(Some(c.jsonpath(Some(&ns.name), "dataset", "host", path)?))
        })
        .unwrap();
    assert!(message.contains("--local-roots"), "{message}");
    let events = event_messages(c, &ns.name, "host", "Invalid").unwrap();
    assert!(events.contains("local://"), "{events}");
    let claims = c
        .kubectl(&["get", "pvc", "-n", &ns.name, "-o", "name"])
        .unwrap();
    assert!(claims.trim().is_empty(), "a claim was made: {claims}");
}
