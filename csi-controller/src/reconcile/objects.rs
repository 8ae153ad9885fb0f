//! The Kubernetes objects a bound Dataset owns, built from it without I/O: the PV
//! `<namespace>-<name>-<hash>`, the pre-bound PVC `<name>` of StorageClass `fluid`, and the
//! Secret that carries the mounts' encrypt options to the node as CSI node-stage secrets; and
//! how to tell that an object of one of those names is the Dataset's and not someone else's.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    CSIPersistentVolumeSource, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
    ObjectReference, PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeSpec, Secret, SecretReference, VolumeNodeAffinity, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use crate::crd::Dataset;

/// The StorageClass of every Fluid volume.
pub const STORAGE_CLASS: &str = "fluid";
/// Labels on the PV, PVC and Secret naming their Dataset (values fit the 63-character limit).
pub const LABEL_NAME: &str = "fluid.io/dataset";
pub const LABEL_NAMESPACE: &str = "fluid.io/dataset-namespace";
/// ... and its uid (on objects made since PV names carry a hash).
pub const LABEL_UID: &str = "fluid.io/dataset-uid";
/// The size a Dataset volume reports: it has no size of its own (Fluid uses the same).
pub const CAPACITY: &str = "100Pi";
/// Access mode when the Dataset names none: many pods on many nodes, reading.
pub const DEFAULT_ACCESS_MODE: &str = "ReadOnlyMany";

/// Longest object name (a DNS subdomain).
const MAX_NAME: usize = 253;

/// The PV of a Dataset: `<namespace>-<name>-<12 hex of sha256(namespace/name)>`. The readable
/// part alone is not unique (`team-dev`/`x` and `team`/`dev-x` join alike); the pair behind the
/// hash is, since neither part may hold a `/`.
pub fn pv_name(namespace: &str, name: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{namespace}/{name}").as_bytes());
    let hash: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    let mut readable = format!("{namespace}-{name}");
    readable.truncate(MAX_NAME - hash.len() - 1);
    format!("{}-{hash}", readable.trim_end_matches(['-', '.']))
}

/// PVs made for the Dataset `namespace/name` carry these labels (also those made before PV
/// names had a hash, which the reconciler keeps using).
pub fn pv_selector(namespace: &str, name: &str) -> String {
    format!("{LABEL_NAMESPACE}={namespace},{LABEL_NAME}={name}")
}

/// Whether a PV was made for the Dataset `namespace/name` (a PV is cluster-scoped and cannot
/// have the Dataset as its owner, so its labels say whose it is).
pub fn pv_is_for(meta: &ObjectMeta, namespace: &str, name: &str) -> bool {
    let label = |k: &str| {
        meta.labels
            .as_ref()
            .and_then(|l| l.get(k))
            .map(String::as_str)
    };
    label(LABEL_NAMESPACE) == Some(namespace) && label(LABEL_NAME) == Some(name)
}

/// Whether a PVC or Secret is the Dataset's: the Dataset (this uid) is its controller owner.
pub fn owned_by(meta: &ObjectMeta, uid: &str) -> bool {
    !uid.is_empty()
        && meta
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.controller == Some(true) && o.uid == uid)
}

/// The Secret holding a Dataset's resolved encrypt options.
pub fn secret_name(name: &str) -> String {
    format!("{name}-fluid-credentials")
}

fn labels(ds: &Dataset, namespace: &str, name: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (LABEL_NAME.to_string(), name.to_string()),
        (LABEL_NAMESPACE.to_string(), namespace.to_string()),
    ]);
    if let Some(uid) = ds.uid() {
        labels.insert(LABEL_UID.to_string(), uid);
    }
    labels
}

fn owner(ds: &Dataset) -> Option<OwnerReference> {
    ds.controller_owner_ref(&())
}

fn access_modes(ds: &Dataset) -> Vec<String> {
    if ds.spec.access_modes.is_empty() {
        vec![DEFAULT_ACCESS_MODE.to_string()]
    } else {
        ds.spec.access_modes.clone()
    }
}

/// What the objects are made of, beside the Dataset itself.
pub struct VolumeParts<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    /// The PV's name: [`pv_name`], or that of the PV made for the Dataset before.
    pub pv_name: &'a str,
    pub driver: &'a str,
    pub attributes: BTreeMap<String, String>,
    /// Labels a node must have to run the Dataset's FUSE daemon (the runtime's
    /// `fuse.nodeSelector`).
    pub node_selector: &'a BTreeMap<String, String>,
}

pub fn persistent_volume(ds: &Dataset, parts: &VolumeParts<'_>) -> PersistentVolume {
    let node_affinity = (!parts.node_selector.is_empty()).then(|| VolumeNodeAffinity {
        required: Some(NodeSelector {
            node_selector_terms: vec![NodeSelectorTerm {
                match_expressions: Some(
                    parts
                        .node_selector
                        .iter()
                        .map(|(k, v)| NodeSelectorRequirement {
                            key: k.clone(),
                            operator: "In".into(),
                            values: Some(vec![v.clone()]),
                        })
                        .collect(),
                ),
                match_fields: None,
            }],
        }),
    });
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some(parts.pv_name.to_string()),
            labels: Some(labels(ds, parts.namespace, parts.name)),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            access_modes: Some(access_modes(ds)),
            capacity: Some(BTreeMap::from([(
                "storage".to_string(),
                Quantity(CAPACITY.into()),
            )])),
            storage_class_name: Some(STORAGE_CLASS.into()),
            // The Dataset's finalizer removes the PV; nothing else should.
            persistent_volume_reclaim_policy: Some("Retain".into()),
            claim_ref: Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("PersistentVolumeClaim".into()),
                namespace: Some(parts.namespace.to_string()),
                name: Some(parts.name.to_string()),
                ..Default::default()
            }),
            csi: Some(CSIPersistentVolumeSource {
                driver: parts.driver.to_string(),
                volume_handle: parts.pv_name.to_string(),
                read_only: None,
                volume_attributes: Some(parts.attributes.clone()),
                node_stage_secret_ref: Some(SecretReference {
                    name: Some(secret_name(parts.name)),
                    namespace: Some(parts.namespace.to_string()),
                }),
                ..Default::default()
            }),
            node_affinity,
            ..Default::default()
        }),
        status: None,
    }
}

pub fn claim(ds: &Dataset, parts: &VolumeParts<'_>) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(parts.name.to_string()),
            namespace: Some(parts.namespace.to_string()),
            labels: Some(labels(ds, parts.namespace, parts.name)),
            owner_references: owner(ds).map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(access_modes(ds)),
            storage_class_name: Some(STORAGE_CLASS.into()),
            volume_name: Some(parts.pv_name.to_string()),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(CAPACITY.into()),
                )])),
                limits: None,
            }),
            ..Default::default()
        }),
        status: None,
    }
}

/// The node-stage Secret: one key (`fluid_volume::context::MOUNT_SECRETS`) whose value is a JSON
/// list, per mount in order, of option name to value. It exists for every bound Dataset, empty
/// maps when no mount has encrypt options, so that a StorageClass can always name it.
pub fn credentials(
    ds: &Dataset,
    parts: &VolumeParts<'_>,
    per_mount: &[BTreeMap<String, String>],
) -> Secret {
    // Serializing a list of string maps cannot fail.
    let json = serde_json::to_vec(per_mount).unwrap_or_default();
    Secret {
        metadata: ObjectMeta {
            name: Some(secret_name(parts.name)),
            namespace: Some(parts.namespace.to_string()),
            labels: Some(labels(ds, parts.namespace, parts.name)),
            owner_references: owner(ds).map(|o| vec![o]),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            fluid_volume::context::MOUNT_SECRETS.to_string(),
            ByteString(json),
        )])),
        ..Default::default()
    }
}

/// The node-stage secrets a Secret gives the node, as kubelet passes them in the CSI call
/// (keys whose values are not UTF-8 are left out, as no option can use them).
pub fn stage_secrets(secret: &Secret) -> HashMap<String, String> {
    secret
        .data
        .iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), String::from_utf8(v.0.clone()).ok()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{DatasetMount, DatasetSpec};

    fn dataset() -> Dataset {
        let mut ds = Dataset::new(
            "imagenet",
            DatasetSpec {
                mounts: vec![DatasetMount {
                    mount_point: "s3://imagenet".into(),
                    name: "train".into(),
                    path: None,
                    options: BTreeMap::new(),
                    read_only: false,
                    encrypt_options: Vec::new(),
                }],
                shared_options: BTreeMap::new(),
                shared_encrypt_options: Vec::new(),
                access_modes: Vec::new(),
                node_affinity: None,
                placement: Default::default(),
            },
        );
        ds.metadata.namespace = Some("ml".into());
        ds.metadata.uid = Some("u-1".into());
        ds
    }

    #[test]
    fn pv_and_pvc_are_pre_bound_to_each_other() {
        let ds = dataset();
        let selector = BTreeMap::from([("gpu".to_string(), "a100".to_string())]);
        let parts = VolumeParts {
            namespace: "ml",
            name: "imagenet",
            pv_name: &pv_name("ml", "imagenet"),
            driver: "fuse.csi.fluid.io",
            attributes: BTreeMap::from([("fluid.io/dataset".into(), "ml/imagenet".into())]),
            node_selector: &selector,
        };
        let pv = persistent_volume(&ds, &parts);
        let pvc = claim(&ds, &parts);
        let pv_spec = pv.spec.unwrap();
        let pvc_spec = pvc.spec.unwrap();
        let name = pv_name("ml", "imagenet");
        assert!(name.starts_with("ml-imagenet-"), "{name}");
        assert_eq!(pv.metadata.name.as_deref(), Some(name.as_str()));
        assert_eq!(pvc_spec.volume_name.as_deref(), Some(name.as_str()));
        assert!(pv_is_for(&pv.metadata, "ml", "imagenet"));
        assert!(!pv_is_for(&pv.metadata, "ml-imagenet", "x"));
        let claim_ref = pv_spec.claim_ref.unwrap();
        assert_eq!(claim_ref.name.as_deref(), Some("imagenet"));
        assert_eq!(claim_ref.namespace.as_deref(), Some("ml"));
        assert_eq!(pv_spec.storage_class_name.as_deref(), Some(STORAGE_CLASS));
        assert_eq!(pvc_spec.storage_class_name.as_deref(), Some(STORAGE_CLASS));
        assert_eq!(pv_spec.access_modes, Some(vec!["ReadOnlyMany".to_string()]));
        let csi = pv_spec.csi.unwrap();
        assert_eq!(csi.driver, "fuse.csi.fluid.io");
        let secret_ref = csi.node_stage_secret_ref.unwrap();
        assert_eq!(
            secret_ref.name.as_deref(),
            Some("imagenet-fluid-credentials")
        );
        assert_eq!(secret_ref.namespace.as_deref(), Some("ml"));
        let terms = pv_spec
            .node_affinity
            .unwrap()
            .required
            .unwrap()
            .node_selector_terms;
        let expr = &terms[0].match_expressions.as_ref().unwrap()[0];
        assert_eq!((expr.key.as_str(), expr.operator.as_str()), ("gpu", "In"));
        // The PVC (same namespace) is owned by the Dataset; the cluster-scoped PV cannot be.
        assert!(owned_by(&pvc.metadata, "u-1"));
        assert!(!owned_by(&pvc.metadata, "u-2"));
        assert!(pv.metadata.owner_references.is_none());
    }

    #[test]
    fn pv_names_of_pairs_that_join_alike_differ() {
        let (a, b) = (pv_name("team-dev", "x"), pv_name("team", "dev-x"));
        assert!(a.starts_with("team-dev-x-") && b.starts_with("team-dev-x-"));
        assert_ne!(a, b);
        // The longest names still make a valid one.
        let long = pv_name(&"n".repeat(63), &"d".repeat(253));
        assert_eq!(long.len(), MAX_NAME);
        let (_, hash) = long.rsplit_once('-').unwrap();
        assert!(
            hash.len() == 12 && hash.bytes().all(|c| c.is_ascii_hexdigit()),
            "{long}"
        );
    }

    #[test]
    fn credentials_are_one_json_key() {
        let ds = dataset();
        let none = BTreeMap::new();
        let parts = VolumeParts {
            namespace: "ml",
            name: "imagenet",
            pv_name: "pv",
            driver: "d",
            attributes: BTreeMap::new(),
            node_selector: &none,
        };
        let per_mount = vec![BTreeMap::from([(
            "access-key".to_string(),
            "AK".to_string(),
        )])];
        let s = credentials(&ds, &parts, &per_mount);
        let staged = stage_secrets(&s);
        let back: Vec<BTreeMap<String, String>> =
            serde_json::from_str(&staged[fluid_volume::context::MOUNT_SECRETS]).unwrap();
        assert_eq!(back, per_mount);
    }
}
