//! Rendered manifests against linters, schemas, the API server's dry run and the documentation.

use super::*;

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
