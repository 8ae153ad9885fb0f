//! The mutation itself, without I/O: from a pod, its namespace and the Datasets its PVCs belong
//! to, the JSON patch that steers it toward nodes holding those Datasets' caches.
//!
//! Each Dataset gives one node label key ([`dataset_label_key`], value `true`, set by the node
//! plugin while the Dataset is staged there). By default the pod gets a preferred term of
//! weight 100 per Dataset (a node holding two of its Datasets scores twice). With the pod label
//! `fluid.io/dataset.<name>.sched: required` the key becomes a requirement, ANDed into every
//! required node-selector term, since the terms themselves are ORed. A key the pod already
//! mentions (its nodeSelector or any node-affinity expression) is the user's choice and is left
//! alone. A pod none of whose Datasets is Exclusive must also stay off the nodes that an
//! Exclusive Dataset holds (`fluid_exclusive DoesNotExist`, ANDed the same way): the node plugin
//! would refuse its volumes there.
//!
//! Every mount of a Fluid volume that does not choose its own propagation gets
//! `mountPropagation: HostToContainer`: when a fluid-fuse daemon dies, the node plugin mounts
//! its successor and binds it onto the pod's volume path again on the host, and only a
//! HostToContainer mount lets that new mount reach the running container (with the default,
//! private propagation the container keeps the dead mount: "transport endpoint is not
//! connected" until the pod restarts).
//!
//! The patch only adds: arrays get elements appended, missing objects are created whole. So
//! fields of the pod this crate's Kubernetes types do not know survive, and the user's own
//! terms and weights are never rewritten.

use std::collections::BTreeSet;

use fluid_volume::labels::{DATASET_LABEL_VALUE, EXCLUSIVE_LABEL, dataset_label_key};
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation};
use k8s_openapi::api::core::v1::{NodeAffinity, NodeSelectorTerm, Pod};
use serde_json::{Value, json};

/// The weight of each added preferred term: the most the scheduler allows, so the cache counts
/// as much as any other preference.
pub const WEIGHT: i32 = 100;

/// The value of the per-Dataset scheduling label that turns the preference into a requirement.
pub const REQUIRED: &str = "required";

/// The pod label that chooses how Dataset `name` is placed: `fluid.io/dataset.<name>.sched`.
pub fn sched_label(name: &str) -> String {
    format!("fluid.io/dataset.{name}.sched")
}

/// The PVCs a pod mounts, in the order of its volumes, each once.
pub fn claim_names(pod: &Pod) -> Vec<String> {
    let mut seen = BTreeSet::new();
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| v.persistent_volume_claim.as_ref())
        .map(|c| c.claim_name.clone())
        .filter(|c| !c.is_empty() && seen.insert(c.clone()))
        .collect()
}

/// The Datasets a pod mounts, as the webhook resolved them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodDatasets {
    /// Dataset names of the pod's namespace.
    pub names: BTreeSet<String>,
    /// None of them has `placement: Exclusive`: the pod must stay off nodes that another
    /// Dataset holds exclusively (label `fluid_exclusive`), where NodeStage would refuse it.
    pub avoid_exclusive_nodes: bool,
    /// The pod's claims that are Fluid volumes: those of the Datasets, and claims bound to
    /// a PV of this driver.
    pub fluid_claims: BTreeSet<String>,
}

/// The JSON patch for a pod of `namespace` that mounts `datasets`; empty when there is nothing
/// to add.
pub fn patch(pod: &Pod, namespace: &str, datasets: &PodDatasets) -> Vec<PatchOperation> {
    let mut ops = affinity(pod, namespace, datasets);
    ops.extend(propagation(pod, &datasets.fluid_claims));
    ops
}

/// `mountPropagation: HostToContainer` for each mount of a Fluid claim that sets none, in
/// containers and init containers.
fn propagation(pod: &Pod, claims: &BTreeSet<String>) -> Vec<PatchOperation> {
    let Some(spec) = &pod.spec else {
        return Vec::new();
    };
    if claims.is_empty() {
        return Vec::new();
    }
    let volumes: BTreeSet<&str> = spec
        .volumes
        .iter()
        .flatten()
        .filter(|v| {
            v.persistent_volume_claim
                .as_ref()
                .is_some_and(|c| claims.contains(&c.claim_name))
        })
        .map(|v| v.name.as_str())
        .collect();
    let lists = [
        ("containers", Some(&spec.containers)),
        ("initContainers", spec.init_containers.as_ref()),
    ];
    let mut ops = Vec::new();
    for (field, containers) in lists {
        for (i, c) in containers.into_iter().flatten().enumerate() {
            for (j, m) in c.volume_mounts.iter().flatten().enumerate() {
                if volumes.contains(m.name.as_str()) && m.mount_propagation.is_none() {
                    let (i, j) = (i.to_string(), j.to_string());
                    ops.push(add(
                        &["spec", field, &i, "volumeMounts", &j, "mountPropagation"],
                        json!("HostToContainer"),
                    ));
                }
            }
        }
    }
    ops
}

/// The node affinity toward the Datasets' nodes (see the module doc).
fn affinity(pod: &Pod, namespace: &str, datasets: &PodDatasets) -> Vec<PatchOperation> {
    let Some(spec) = &pod.spec else {
        return Vec::new();
    };
    if datasets.names.is_empty() {
        return Vec::new();
    }
    let mut mentioned = mentioned_keys(pod);
    let (mut preferred, mut required) = (Vec::new(), Vec::new());
    for name in &datasets.names {
        let key = dataset_label_key(namespace, name);
        // `insert` is false for a key the pod already has, or one added for another Dataset.
        if !mentioned.insert(key.clone()) {
            continue;
        }
        let wants_required = pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(&sched_label(name)))
            .is_some_and(|v| v == REQUIRED);
        if wants_required {
            required.push(expression(&key));
        } else {
            preferred.push(key);
        }
    }
    if datasets.avoid_exclusive_nodes && mentioned.insert(EXCLUSIVE_LABEL.to_string()) {
        required.push(json!({"key": EXCLUSIVE_LABEL, "operator": "DoesNotExist"}));
    }
    if preferred.is_empty() && required.is_empty() {
        return Vec::new();
    }

    let node = spec.affinity.as_ref().map(|a| a.node_affinity.as_ref());
    match node {
        None => vec![add(
            &["spec", "affinity"],
            json!({"nodeAffinity": new_node_affinity(&preferred, &required)}),
        )],
        Some(None) => vec![add(
            &["spec", "affinity", "nodeAffinity"],
            new_node_affinity(&preferred, &required),
        )],
        Some(Some(node)) => {
            let mut ops = add_preferred(node, &preferred);
            ops.extend(add_required(node, &required));
            ops
        }
    }
}

const BASE: [&str; 3] = ["spec", "affinity", "nodeAffinity"];
const PREFERRED: &str = "preferredDuringSchedulingIgnoredDuringExecution";
const REQUIRED_FIELD: &str = "requiredDuringSchedulingIgnoredDuringExecution";

/// The node label keys a pod already names: its nodeSelector, and every expression of its node
/// affinity, required or preferred.
fn mentioned_keys(pod: &Pod) -> BTreeSet<String> {
    let Some(spec) = &pod.spec else {
        return BTreeSet::new();
    };
    let mut keys: BTreeSet<String> = spec
        .node_selector
        .iter()
        .flatten()
        .map(|(k, _)| k.clone())
        .collect();
    let Some(node) = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
    else {
        return keys;
    };
    let required = node
        .required_during_scheduling_ignored_during_execution
        .iter()
        .flat_map(|r| r.node_selector_terms.iter());
    let preferred = node
        .preferred_during_scheduling_ignored_during_execution
        .iter()
        .flatten()
        .map(|p| &p.preference);
    for term in required.chain(preferred) {
        keys.extend(term_keys(term));
    }
    keys
}

fn term_keys(term: &NodeSelectorTerm) -> impl Iterator<Item = String> + '_ {
    term.match_expressions
        .iter()
        .flatten()
        .map(|e| e.key.clone())
}

fn expression(key: &str) -> Value {
    json!({"key": key, "operator": "In", "values": [DATASET_LABEL_VALUE]})
}

fn preferred_term(key: &str) -> Value {
    json!({"weight": WEIGHT, "preference": {"matchExpressions": [expression(key)]}})
}

/// A whole nodeAffinity for a pod that has none.
fn new_node_affinity(preferred: &[String], required: &[Value]) -> Value {
    let mut node = serde_json::Map::new();
    if !preferred.is_empty() {
        node.insert(
            PREFERRED.into(),
            Value::Array(preferred.iter().map(|k| preferred_term(k)).collect()),
        );
    }
    if !required.is_empty() {
        node.insert(
            REQUIRED_FIELD.into(),
            json!({"nodeSelectorTerms": [{"matchExpressions": required}]}),
        );
    }
    Value::Object(node)
}

/// Appends a preferred term per key to the pod's own (or sets the list when it has none).
fn add_preferred(node: &NodeAffinity, keys: &[String]) -> Vec<PatchOperation> {
    if keys.is_empty() {
        return Vec::new();
    }
    let has_terms = node
        .preferred_during_scheduling_ignored_during_execution
        .as_ref()
        .is_some_and(|t| !t.is_empty());
    let terms = keys.iter().map(|k| preferred_term(k)).collect();
    extend_list(&[&BASE[..], &[PREFERRED]].concat(), has_terms, terms)
}

/// ANDs the expressions into every required term (or makes the one term).
fn add_required(node: &NodeAffinity, exprs: &[Value]) -> Vec<PatchOperation> {
    if exprs.is_empty() {
        return Vec::new();
    }
    let path = [&BASE[..], &[REQUIRED_FIELD]].concat();
    let Some(required) = &node.required_during_scheduling_ignored_during_execution else {
        return vec![add(
            &path,
            json!({"nodeSelectorTerms": [{"matchExpressions": exprs}]}),
        )];
    };
    let terms = &required.node_selector_terms;
    if terms.is_empty() {
        let path = [&path[..], &["nodeSelectorTerms"]].concat();
        return vec![add(&path, json!([{"matchExpressions": exprs}]))];
    }
    let mut ops = Vec::new();
    for (i, term) in terms.iter().enumerate() {
        let index = i.to_string();
        let exprs_path = [
            &path[..],
            &["nodeSelectorTerms", &index, "matchExpressions"],
        ]
        .concat();
        // A term of only matchFields (or an empty one) gets the whole list.
        let has_exprs = term
            .match_expressions
            .as_ref()
            .is_some_and(|e| !e.is_empty());
        ops.extend(extend_list(&exprs_path, has_exprs, exprs.to_vec()));
    }
    ops
}

/// Adds `values` to the list at `path`: appended after its items when it has some, else set
/// as the whole list (`add` on a present empty or null member replaces it, on a missing one
/// creates it).
fn extend_list(path: &[&str], has_items: bool, values: Vec<Value>) -> Vec<PatchOperation> {
    if has_items {
        let append = [path, &["-"]].concat();
        values.into_iter().map(|v| add(&append, v)).collect()
    } else {
        vec![add(path, Value::Array(values))]
    }
}

fn add(tokens: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: PointerBuf::from_tokens(tokens.iter().copied()),
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(value: Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    fn base_pod() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p", "namespace": "ml"},
            "spec": {
                "containers": [{"name": "c", "image": "busybox"}],
                "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "imagenet"}}]
            }
        })
    }

    /// Datasets none of which is Exclusive, without the exclusive-node requirement (tested
    /// on its own below), so that each test sees the dataset terms alone.
    fn set(names: &[&str]) -> PodDatasets {
        PodDatasets {
            names: names.iter().map(|s| s.to_string()).collect(),
            avoid_exclusive_nodes: false,
            fluid_claims: BTreeSet::new(),
        }
    }

    #[test]
    fn fluid_mounts_get_host_to_container_propagation_unless_they_chose() {
        let original = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p", "namespace": "ml"},
            "spec": {
                "initContainers": [{"name": "i", "image": "busybox",
                    "volumeMounts": [{"name": "d", "mountPath": "/warm"}]}],
                "containers": [
                    {"name": "a", "image": "busybox", "volumeMounts": [
                        {"name": "scratch", "mountPath": "/tmp"},
                        {"name": "d", "mountPath": "/data"},
                        {"name": "dyn", "mountPath": "/dyn"}]},
                    {"name": "b", "image": "busybox", "volumeMounts": [
                        {"name": "d", "mountPath": "/data", "mountPropagation": "None"}]}
                ],
                "volumes": [
                    {"name": "d", "persistentVolumeClaim": {"claimName": "imagenet"}},
                    {"name": "dyn", "persistentVolumeClaim": {"claimName": "scratch-fluid"}},
                    {"name": "scratch", "emptyDir": {}}
                ]
            }
        });
        // A dynamically provisioned claim is a Fluid volume without being a Dataset's.
        let datasets = PodDatasets {
            fluid_claims: ["imagenet", "scratch-fluid"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            ..set(&[])
        };
        let doc = apply(&original, patch(&pod(original.clone()), "ml", &datasets));
        let mounts = |c: &str, i: usize| doc["spec"][c][i]["volumeMounts"].clone();
        assert_eq!(
            mounts("initContainers", 0)[0]["mountPropagation"],
            json!("HostToContainer")
        );
        let a = mounts("containers", 0);
        assert_eq!(
            a[0].get("mountPropagation"),
            None,
            "an emptyDir is left alone"
        );
        assert_eq!(a[1]["mountPropagation"], json!("HostToContainer"));
        assert_eq!(a[2]["mountPropagation"], json!("HostToContainer"));
        assert_eq!(
            mounts("containers", 1)[0]["mountPropagation"],
            json!("None"),
            "the user's choice stays"
        );
        assert!(
            doc["spec"].get("affinity").is_none(),
            "no Dataset, no affinity"
        );
    }

    /// The pod after the patch, as the API server would apply it.
    fn apply(original: &Value, ops: Vec<PatchOperation>) -> Value {
        let mut doc = original.clone();
        json_patch::patch(&mut doc, &json_patch::Patch(ops)).unwrap();
        doc
    }

    fn key(name: &str) -> String {
        dataset_label_key("ml", name)
    }

    fn node_affinity(doc: &Value) -> &Value {
        &doc["spec"]["affinity"]["nodeAffinity"]
    }

    #[test]
    fn claim_names_in_order_once() {
        let p = pod(json!({
            "spec": {
                "containers": [],
                "volumes": [
                    {"name": "a", "persistentVolumeClaim": {"claimName": "one"}},
                    {"name": "b", "emptyDir": {}},
                    {"name": "c", "persistentVolumeClaim": {"claimName": "two", "readOnly": true}},
                    {"name": "d", "persistentVolumeClaim": {"claimName": "one"}}
                ]
            }
        }));
        assert_eq!(claim_names(&p), vec!["one", "two"]);
        assert!(claim_names(&pod(json!({"spec": {"containers": []}}))).is_empty());
        assert!(claim_names(&Pod::default()).is_empty());
    }

    #[test]
    fn no_datasets_no_patch() {
        let p = pod(base_pod());
        assert!(patch(&p, "ml", &PodDatasets::default()).is_empty());
        let none = PodDatasets {
            avoid_exclusive_nodes: true,
            ..Default::default()
        };
        assert!(patch(&p, "ml", &none).is_empty());
        assert!(patch(&Pod::default(), "ml", &set(&["imagenet"])).is_empty());
    }

    #[test]
    fn preferred_on_a_pod_without_affinity() {
        let original = base_pod();
        let doc = apply(
            &original,
            patch(&pod(original.clone()), "ml", &set(&["imagenet"])),
        );
        assert_eq!(
            node_affinity(&doc),
            &json!({PREFERRED: [{
                "weight": 100,
                "preference": {"matchExpressions": [{"key": "fluid.io/s-ml-imagenet", "operator": "In", "values": ["true"]}]}
            }]})
        );
        // Everything else is as it was.
        let mut rest = doc.clone();
        rest["spec"].as_object_mut().unwrap().remove("affinity");
        assert_eq!(rest, original);
    }

    #[test]
    fn preferred_keeps_other_terms_and_affinities() {
        let mut original = base_pod();
        original["spec"]["affinity"] = json!({
            "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 5, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname"}}
            ]},
            "nodeAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 7, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}}
                ],
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}
                ]}
            }
        });
        let doc = apply(
            &original,
            patch(&pod(original.clone()), "ml", &set(&["imagenet"])),
        );
        let node = node_affinity(&doc);
        let terms = node[PREFERRED].as_array().unwrap();
        assert_eq!(terms.len(), 2);
        assert_eq!(
            terms[0],
            original["spec"]["affinity"]["nodeAffinity"][PREFERRED][0]
        );
        assert_eq!(terms[1]["weight"], json!(100));
        assert_eq!(
            terms[1]["preference"]["matchExpressions"][0]["key"],
            json!(key("imagenet"))
        );
        // The required terms and the pod anti-affinity are untouched.
        assert_eq!(
            node[REQUIRED_FIELD],
            original["spec"]["affinity"]["nodeAffinity"][REQUIRED_FIELD]
        );
        assert_eq!(
            doc["spec"]["affinity"]["podAntiAffinity"],
            original["spec"]["affinity"]["podAntiAffinity"]
        );
    }

    #[test]
    fn preferred_into_an_empty_node_affinity_or_list() {
        for affinity in [
            json!({"podAffinity": {}}),
            json!({"nodeAffinity": {}}),
            json!({"nodeAffinity": {PREFERRED: []}}),
        ] {
            let mut original = base_pod();
            original["spec"]["affinity"] = affinity.clone();
            let doc = apply(
                &original,
                patch(&pod(original.clone()), "ml", &set(&["imagenet"])),
            );
            let terms = node_affinity(&doc)[PREFERRED].as_array().unwrap();
            assert_eq!(terms.len(), 1, "{affinity}");
            if affinity.get("podAffinity").is_some() {
                assert_eq!(doc["spec"]["affinity"]["podAffinity"], json!({}));
            }
        }
    }

    #[test]
    fn two_datasets_two_terms() {
        let original = base_pod();
        let doc = apply(
            &original,
            patch(&pod(original.clone()), "ml", &set(&["imagenet", "coco"])),
        );
        let keys: Vec<&Value> = node_affinity(&doc)[PREFERRED]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| &t["preference"]["matchExpressions"][0]["key"])
            .collect();
        assert_eq!(keys, vec![&json!(key("coco")), &json!(key("imagenet"))]);
    }

    #[test]
    fn required_label_makes_a_requirement() {
        let mut original = base_pod();
        original["metadata"]["labels"] = json!({"fluid.io/dataset.imagenet.sched": "required"});
        let doc = apply(
            &original,
            patch(&pod(original.clone()), "ml", &set(&["imagenet"])),
        );
        assert_eq!(
            node_affinity(&doc),
            &json!({REQUIRED_FIELD: {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "fluid.io/s-ml-imagenet", "operator": "In", "values": ["true"]}
            ]}]}})
        );
    }

    #[test]
    fn required_is_anded_into_every_term() {
        let mut original = base_pod();
        original["metadata"]["labels"] = json!({"fluid.io/dataset.imagenet.sched": "required"});
        original["spec"]["affinity"] = json!({"nodeAffinity": {
            REQUIRED_FIELD: {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]},
                {"matchExpressions": [{"key": "gpu", "operator": "Exists"}], "matchFields": []}
            ]},
            PREFERRED: [{"weight": 3, "preference": {"matchExpressions": [{"key": "ssd", "operator": "Exists"}]}}]
        }});
        let doc = apply(
            &original,
            patch(&pod(original.clone()), "ml", &set(&["imagenet"])),
        );
        let ours = expression(&key("imagenet"));
        let terms = node_affinity(&doc)[REQUIRED_FIELD]["nodeSelectorTerms"]
            .as_array()
            .unwrap();
        assert_eq!(terms.len(), 3);
        assert_eq!(
            terms[0]["matchExpressions"],
            json!([{"key": "zone", "operator": "In", "values": ["a"]}, ours])
        );
        assert_eq!(terms[1]["matchExpressions"], json!([ours]));
        assert_eq!(
            terms[1]["matchFields"],
            json!([{"key": "metadata.name", "operator": "In", "values": ["n1"]}])
        );
        assert_eq!(
            terms[2]["matchExpressions"],
            json!([{"key": "gpu", "operator": "Exists"}, ours])
        );
        // The preferred list is the user's alone.
        assert_eq!(
            node_affinity(&doc)[PREFERRED],
            original["spec"]["affinity"]["nodeAffinity"][PREFERRED]
        );
    }

    #[test]
    fn required_with_empty_terms_gets_one() {
        let mut original = base_pod();
        original["metadata"]["labels"] = json!({"fluid.io/dataset.imagenet.sched": "required"});
        original["spec"]["affinity"] =
            json!({"nodeAffinity": {REQUIRED_FIELD: {"nodeSelectorTerms": []}}});
        let doc = apply(
            &original,
            patch(&pod(original.clone()), "ml", &set(&["imagenet"])),
        );
        assert_eq!(
            node_affinity(&doc)[REQUIRED_FIELD]["nodeSelectorTerms"],
            json!([{"matchExpressions": [expression(&key("imagenet"))]}])
        );
    }

    #[test]
    fn mixed_required_and_preferred() {
        let mut original = base_pod();
        original["metadata"]["labels"] = json!({
            "fluid.io/dataset.imagenet.sched": "required",
            // Anything but `required` means the default.
            "fluid.io/dataset.coco.sched": "Required",
        });
        let doc = apply(
            &original,
            patch(&pod(original.clone()), "ml", &set(&["imagenet", "coco"])),
        );
        let node = node_affinity(&doc);
        assert_eq!(
            node[REQUIRED_FIELD]["nodeSelectorTerms"],
            json!([{"matchExpressions": [expression(&key("imagenet"))]}])
        );
        assert_eq!(node[PREFERRED], json!([preferred_term(&key("coco"))]));

        // The same on a pod with an (empty) nodeAffinity: two operations, both apply.
        original["spec"]["affinity"] = json!({"nodeAffinity": {}});
        let again = apply(
            &original,
            patch(&pod(original.clone()), "ml", &set(&["imagenet", "coco"])),
        );
        assert_eq!(node_affinity(&again), node);
    }

    #[test]
    fn other_label_values_are_ignored() {
        for value in ["preferred", "true", "", "REQUIRED"] {
            let mut original = base_pod();
            original["metadata"]["labels"] = json!({"fluid.io/dataset.imagenet.sched": value});
            let doc = apply(
                &original,
                patch(&pod(original.clone()), "ml", &set(&["imagenet"])),
            );
            assert!(node_affinity(&doc).get(REQUIRED_FIELD).is_none(), "{value}");
            assert_eq!(node_affinity(&doc)[PREFERRED].as_array().unwrap().len(), 1);
        }
        // A label for another Dataset does not apply to this one.
        let mut original = base_pod();
        original["metadata"]["labels"] = json!({"fluid.io/dataset.coco.sched": "required"});
        let doc = apply(
            &original,
            patch(&pod(original.clone()), "ml", &set(&["imagenet"])),
        );
        assert!(node_affinity(&doc).get(REQUIRED_FIELD).is_none());
    }

    #[test]
    fn a_key_the_pod_names_is_left_alone() {
        let k = key("imagenet");
        let own = [
            json!({"nodeSelector": {k.clone(): "true"}}),
            json!({"affinity": {"nodeAffinity": {PREFERRED: [
                {"weight": 1, "preference": {"matchExpressions": [{"key": k, "operator": "DoesNotExist"}]}}
            ]}}}),
            json!({"affinity": {"nodeAffinity": {REQUIRED_FIELD: {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "Exists"}]},
                {"matchExpressions": [{"key": k, "operator": "In", "values": ["true"]}]}
            ]}}}}),
        ];
        for extra in own {
            for labels in [
                json!({}),
                json!({"fluid.io/dataset.imagenet.sched": "required"}),
            ] {
                let mut original = base_pod();
                original["metadata"]["labels"] = labels;
                for (field, value) in extra.as_object().unwrap() {
                    original["spec"][field] = value.clone();
                }
                assert!(
                    patch(&pod(original.clone()), "ml", &set(&["imagenet"])).is_empty(),
                    "{extra}"
                );
                // Another Dataset of the same pod still gets its term.
                let doc = apply(
                    &original,
                    patch(&pod(original.clone()), "ml", &set(&["imagenet", "coco"])),
                );
                assert!(doc.to_string().contains(&key("coco")), "{extra}");
            }
        }
    }

    #[test]
    fn long_names_use_the_hashed_key() {
        let name = "d".repeat(60);
        let original = base_pod();
        let doc = apply(
            &original,
            patch(&pod(original.clone()), "ml", &set(&[&name])),
        );
        let got = &node_affinity(&doc)[PREFERRED][0]["preference"]["matchExpressions"][0]["key"];
        assert_eq!(got, &json!(dataset_label_key("ml", &name)));
        assert!(got.as_str().unwrap().len() <= "fluid.io/".len() + 63);
    }

    #[test]
    fn patching_twice_adds_nothing_more() {
        let mut original = base_pod();
        original["metadata"]["labels"] = json!({"fluid.io/dataset.coco.sched": "required"});
        let datasets = set(&["imagenet", "coco"]);
        let once = apply(&original, patch(&pod(original.clone()), "ml", &datasets));
        assert!(patch(&pod(once), "ml", &datasets).is_empty());
    }

    fn shared(names: &[&str]) -> PodDatasets {
        PodDatasets {
            avoid_exclusive_nodes: true,
            ..set(names)
        }
    }

    #[test]
    fn pods_of_shared_datasets_stay_off_exclusive_nodes() {
        let off = json!({"key": "fluid_exclusive", "operator": "DoesNotExist"});
        let original = base_pod();
        let doc = apply(
            &original,
            patch(&pod(original.clone()), "ml", &shared(&["imagenet"])),
        );
        assert_eq!(
            node_affinity(&doc)[REQUIRED_FIELD],
            json!({"nodeSelectorTerms": [{"matchExpressions": [off]}]})
        );
        assert_eq!(
            node_affinity(&doc)[PREFERRED][0]["preference"]["matchExpressions"][0]["key"],
            json!(key("imagenet"))
        );

        // ANDed into each of the user's terms, beside a required dataset key.
        let mut original = base_pod();
        original["metadata"]["labels"] = json!({"fluid.io/dataset.imagenet.sched": "required"});
        original["spec"]["affinity"] = json!({"nodeAffinity": {REQUIRED_FIELD: {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}
        ]}}});
        let doc = apply(
            &original,
            patch(&pod(original.clone()), "ml", &shared(&["imagenet"])),
        );
        let terms = &node_affinity(&doc)[REQUIRED_FIELD]["nodeSelectorTerms"];
        let mine = json!({"key": key("imagenet"), "operator": "In", "values": ["true"]});
        assert_eq!(
            terms[0]["matchExpressions"],
            json!([{"key": "zone", "operator": "In", "values": ["a"]}, mine, off])
        );
        assert_eq!(terms[1]["matchExpressions"], json!([mine, off]));
        assert_eq!(terms[1]["matchFields"][0]["key"], json!("metadata.name"));

        // A pod that names fluid_exclusive itself is left to its own choice.
        let mut original = base_pod();
        original["spec"]["nodeSelector"] = json!({"fluid_exclusive": "ml_imagenet"});
        let doc = apply(
            &original,
            patch(&pod(original.clone()), "ml", &shared(&["imagenet"])),
        );
        assert!(node_affinity(&doc).get(REQUIRED_FIELD).is_none(), "{doc}");
    }
}
