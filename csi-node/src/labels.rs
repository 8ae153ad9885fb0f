//! The node's labels in Kubernetes (`--kubernetes`): while a volume of Dataset `ns/name` is staged
//! here, this node's Node object carries `fluid.io/s-<ns>-<name>=true` (see
//! [`dataset_label_key`]), so the scheduler and the admission webhook can prefer nodes that hold
//! the Dataset's cache; with `--cache-endpoint` it also carries the annotation
//! `fluid.io/cache-endpoint` that tells the controller where to ask for cache figures.
//!
//! One background task makes every update. It wakes when the supervisor's list of staged volumes
//! changes (and every few minutes, to repair edits by others), computes the labels the Node should
//! have from that list as it is now, reads the Node and patches the difference. Because each pass
//! starts from the current list, stage and unstage calls that race end in the right labels, in
//! whatever order their updates run. A failure (API server down, Node not there yet) is logged
//! and retried with backoff; it never fails a CSI call.
//!
//! Removal: a label `fluid.io/s-...=true` that no staged volume justifies is removed. Keys this
//! plugin made for Datasets no longer here cannot be told from others by their name (a shortened
//! key ends in a hash), so the rule is the prefix and the value `true`; labels of the same prefix
//! with other values (Fluid's `fluid.io/s-h-...` capacity labels, for instance) are left alone.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use fluid_volume::context::parse_dataset;
use fluid_volume::labels::{
    CACHE_ENDPOINT_ANNOTATION, DATASET_LABEL_PREFIX, DATASET_LABEL_VALUE, EXCLUSIVE_LABEL,
    dataset_label_key, exclusive_label_value, is_label_name,
};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Map, Value, json};

use crate::error::{Error, Result};
use crate::supervisor::{Supervisor, backoff};

/// A pass even without a change, to put back labels that someone else removed.
const RESYNC: Duration = Duration::from_secs(300);
/// The field manager named in our patches (`kubectl get node -o yaml --show-managed-fields`).
const FIELD_MANAGER: &str = "fluid-csi-node";

/// Starts the task that keeps the Node `node` labelled (see the module doc). `cache_endpoint`
/// is the annotation's value; `None` removes the annotation.
pub fn spawn(
    sup: Arc<Supervisor>,
    client: kube::Client,
    node: String,
    cache_endpoint: Option<String>,
) -> tokio::task::JoinHandle<()> {
    let labeler = Labeler {
        api: Api::all(client),
        node,
        cache_endpoint,
    };
    tokio::spawn(labeler.run(sup))
}

struct Labeler {
    api: Api<Node>,
    node: String,
    cache_endpoint: Option<String>,
}

impl Labeler {
    async fn run(self, sup: Arc<Supervisor>) {
        let mut changes = sup.watch_staged();
        let mut failures: u32 = 0;
        // Datasets already reported as unusable in a label, so each is logged once.
        let mut reported = BTreeSet::new();
        loop {
            // Marked seen before the list is read: a change from now on wakes the next pass.
            changes.borrow_and_update();
            let wanted = label_keys(&sup.staged_datasets(), &mut reported);
            let exclusive = sup
                .exclusive_dataset()
                .and_then(|d| parse_dataset(&d).map(|(ns, name)| exclusive_label_value(ns, name)));
            match self.sync(&wanted, exclusive.as_deref()).await {
                Ok(()) => {
                    if failures > 0 {
                        tracing::info!(node = %self.node, "node labels are up to date again");
                    }
                    failures = 0;
                    tokio::select! {
                        changed = changes.changed() => {
                            if changed.is_err() {
                                return; // the supervisor is gone: the process is ending
                            }
                        }
                        _ = tokio::time::sleep(RESYNC) => {}
                    }
                }
                Err(e) => {
                    failures += 1;
                    let wait = backoff(failures);
                    tracing::warn!(
                        node = %self.node,
                        attempt = failures,
                        "updating the node's labels failed, retrying in {}: {e}",
                        humantime::format_duration(wait)
                    );
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// One pass: reads the Node and patches what differs from `wanted` and `exclusive`.
    async fn sync(&self, wanted: &BTreeSet<String>, exclusive: Option<&str>) -> Result<()> {
        let node = self
            .api
            .get_opt(&self.node)
            .await
            .map_err(|e| Error::kube(format!("reading Node {}", self.node), e))?
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "Node {} does not exist; --nodeid (NODE_ID) must be this node's name in \
                     Kubernetes, as the downward API's spec.nodeName gives it",
                    self.node
                ))
            })?;
        let Some(patch) = node_patch(
            &node.metadata,
            wanted,
            exclusive,
            self.cache_endpoint.as_deref(),
        ) else {
            return Ok(());
        };
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        self.api
            .patch(&self.node, &params, &Patch::Merge(&patch))
            .await
            .map_err(|e| Error::kube(format!("patching Node {}", self.node), e))?;
        tracing::info!(node = %self.node, "node labels updated: {}", describe(&patch));
        Ok(())
    }
}

/// The label keys for the staged Datasets. A Dataset whose name gives no valid label (not
/// `namespace/name`, or characters a Kubernetes name cannot hold) gets none and is reported once.
fn label_keys(datasets: &BTreeSet<String>, reported: &mut BTreeSet<String>) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for d in datasets {
        let key = parse_dataset(d).map(|(ns, name)| dataset_label_key(ns, name));
        match key {
            Some(k) if k.strip_prefix("fluid.io/").is_some_and(is_label_name) => {
                keys.insert(k);
            }
            _ => {
                if reported.insert(d.clone()) {
                    tracing::warn!(
                        "dataset {d:?} of a staged volume is not namespace/name of a Kubernetes \
                         object; the node gets no label for it"
                    );
                }
            }
        }
    }
    keys
}

/// The JSON merge patch that gives the Node the `wanted` dataset labels (and no other
/// `fluid.io/s-...=true` label), `fluid_exclusive=<exclusive>` (`None`: no such label) and the
/// cache endpoint annotation (`None`: none); `None` when the Node is right already. Only keys
/// this plugin owns appear in the patch.
pub fn node_patch(
    meta: &ObjectMeta,
    wanted: &BTreeSet<String>,
    exclusive: Option<&str>,
    cache_endpoint: Option<&str>,
) -> Option<Value> {
    let empty = BTreeMap::new();
    let labels = meta.labels.as_ref().unwrap_or(&empty);
    let mut label_patch = Map::new();
    for key in wanted {
        if labels.get(key).map(String::as_str) != Some(DATASET_LABEL_VALUE) {
            label_patch.insert(key.clone(), json!(DATASET_LABEL_VALUE));
        }
    }
    for (key, value) in labels {
        if key.starts_with(DATASET_LABEL_PREFIX)
            && value == DATASET_LABEL_VALUE
            && !wanted.contains(key)
        {
            label_patch.insert(key.clone(), Value::Null);
        }
    }

    if labels.get(EXCLUSIVE_LABEL).map(String::as_str) != exclusive {
        label_patch.insert(
            EXCLUSIVE_LABEL.into(),
            exclusive.map_or(Value::Null, |v| json!(v)),
        );
    }

    let mut annotation_patch = Map::new();
    let current = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(CACHE_ENDPOINT_ANNOTATION))
        .map(String::as_str);
    if current != cache_endpoint {
        let value = cache_endpoint.map_or(Value::Null, |v| json!(v));
        annotation_patch.insert(CACHE_ENDPOINT_ANNOTATION.into(), value);
    }

    if label_patch.is_empty() && annotation_patch.is_empty() {
        return None;
    }
    let mut metadata = Map::new();
    if !label_patch.is_empty() {
        metadata.insert("labels".into(), Value::Object(label_patch));
    }
    if !annotation_patch.is_empty() {
        metadata.insert("annotations".into(), Value::Object(annotation_patch));
    }
    Some(json!({ "metadata": metadata }))
}

/// `+key -key` for a log line.
fn describe(patch: &Value) -> String {
    let mut parts = Vec::new();
    for field in ["labels", "annotations"] {
        if let Some(Value::Object(m)) = patch["metadata"].get(field) {
            for (k, v) in m {
                parts.push(match v {
                    Value::Null => format!("-{k}"),
                    Value::String(s) => format!("+{k}={s}"),
                    other => format!("+{k}={other}"),
                });
            }
        }
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(labels: &[(&str, &str)], endpoint: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            annotations: endpoint
                .map(|e| BTreeMap::from([(CACHE_ENDPOINT_ANNOTATION.to_string(), e.to_string())])),
            ..Default::default()
        }
    }

    fn keys(datasets: &[&str]) -> BTreeSet<String> {
        let datasets = datasets.iter().map(|d| d.to_string()).collect();
        label_keys(&datasets, &mut BTreeSet::new())
    }

    #[test]
    fn label_keys_of_datasets() {
        let k = keys(&["ml/imagenet", "ml/imagenet", "default/coco", "bad", "a/b/c"]);
        assert_eq!(
            k.into_iter().collect::<Vec<_>>(),
            vec!["fluid.io/s-default-coco", "fluid.io/s-ml-imagenet"]
        );
        assert!(keys(&["ns/Bad Name"]).is_empty());
    }

    #[test]
    fn patch_adds_and_removes_only_our_labels() {
        let wanted = keys(&["ml/imagenet"]);
        let node = meta(
            &[
                ("kubernetes.io/hostname", "n1"),
                ("fluid.io/s-old-gone", "true"),
                ("fluid.io/s-h-alluxio-m-ml-imagenet", "2GiB"),
                ("example.com/s-x", "true"),
            ],
            None,
        );
        let patch = node_patch(&node, &wanted, None, Some("10.0.0.7:9600")).unwrap();
        assert_eq!(
            patch,
            json!({"metadata": {
                "labels": {"fluid.io/s-ml-imagenet": "true", "fluid.io/s-old-gone": null},
                "annotations": {"fluid.io/cache-endpoint": "10.0.0.7:9600"},
            }})
        );
        assert_eq!(
            describe(&patch),
            "+fluid.io/s-ml-imagenet=true -fluid.io/s-old-gone +fluid.io/cache-endpoint=10.0.0.7:9600"
        );
    }

    #[test]
    fn patch_is_none_when_the_node_is_right() {
        let wanted = keys(&["ml/imagenet"]);
        let node = meta(
            &[("fluid.io/s-ml-imagenet", "true"), ("other", "x")],
            Some("10.0.0.7:9600"),
        );
        assert_eq!(
            node_patch(&node, &wanted, None, Some("10.0.0.7:9600")),
            None
        );
        // A label of ours with another value is set to true.
        let node = meta(
            &[("fluid.io/s-ml-imagenet", "false")],
            Some("10.0.0.7:9600"),
        );
        assert_eq!(
            node_patch(&node, &wanted, None, Some("10.0.0.7:9600")),
            Some(json!({"metadata": {"labels": {"fluid.io/s-ml-imagenet": "true"}}}))
        );
        // Without a cache endpoint, a stale annotation goes; a Node without labels is fine.
        let node = ObjectMeta {
            annotations: meta(&[], Some("10.0.0.7:9600")).annotations,
            ..Default::default()
        };
        assert_eq!(
            node_patch(&node, &BTreeSet::new(), None, None),
            Some(json!({"metadata": {"annotations": {"fluid.io/cache-endpoint": null}}}))
        );
        assert_eq!(
            node_patch(&ObjectMeta::default(), &BTreeSet::new(), None, None),
            None
        );
    }
}
