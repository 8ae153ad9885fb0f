//! The API of group `data.fluid.io/v1alpha1` as Rust types: [`Dataset`] (Fluid's, field for
//! field, so a Fluid user's YAML applies unchanged) and [`CacheRuntime`] (ours, in the place of
//! Fluid's AlluxioRuntime/JuiceFSRuntime: same name and namespace as its Dataset).
//!
//! The CustomResourceDefinitions are generated from these types (`fluid-csi-controller crds`)
//! and committed under `deploy/charts/fluid/crds/`; a test keeps the two equal.

pub mod dataload;
pub mod dataset;
pub mod runtime;

use kube::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use dataload::{
    DataLoad, DataLoadPhase, DataLoadSpec, DataLoadStatus, Policy, TargetDataset, TargetPath,
};
pub use dataset::{
    CacheStates, CacheableNodeAffinity, Dataset, DatasetCondition, DatasetMount, DatasetPhase,
    DatasetSpec, DatasetStatus, EncryptOption, EncryptOptionSource, Placement, SecretKeySelector,
};
pub use runtime::{
    CacheMember, CacheRuntime, CacheRuntimeSpec, CacheRuntimeStatus, CleanPolicy, FuseSpec, Level,
    MediumType, RuntimeCondition, RuntimePhase, TieredStore,
};

/// The API group and version of every type here.
pub const GROUP: &str = "data.fluid.io";
pub const VERSION: &str = "v1alpha1";

/// Condition status as Kubernetes spells it (`metav1.ConditionStatus`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

/// The CRDs in the order of the committed files: Dataset, CacheRuntime, DataLoad.
pub fn crds()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    vec![Dataset::crd(), CacheRuntime::crd(), DataLoad::crd()]
}

/// The file name of each CRD under `deploy/charts/fluid/crds/`, in the order of [`crds`]
/// (the `<group>_<plural>.yaml` names that controller-gen gives Fluid's).
pub const CRD_FILES: [&str; 3] = [
    "data.fluid.io_datasets.yaml",
    "data.fluid.io_cacheruntimes.yaml",
    "data.fluid.io_dataloads.yaml",
];

/// One CRD as a YAML document (no `---`).
pub fn crd_yaml(
    crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> String {
    serde_yaml::to_string(crd).expect("a CRD always serializes")
}

/// All CRDs as one YAML stream: each document starts with `---`, so the stream is exactly the
/// committed files concatenated in [`CRD_FILES`] order.
pub fn crds_yaml() -> String {
    crds()
        .iter()
        .map(|crd| format!("---\n{}", crd_yaml(crd)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    use serde_json::{Value, json};

    use super::dataset::MOUNT_POINT_PATTERN;

    /// Fluid's docs example (S3 with credentials from a Secret), plus the affinity and
    /// placement fields, as a Fluid user would apply it.
    const FLUID_DATASET: &str = r#"
apiVersion: data.fluid.io/v1alpha1
kind: Dataset
metadata:
  name: imagenet
  namespace: ml
spec:
  mounts:
    - mountPoint: s3://imagenet/train
      name: train
      path: /
      readOnly: true
      options:
        fs.s3.endpoint: http://minio.storage:9000
        region: us-east-1
      encryptOptions:
        - name: access-key-id
          valueFrom:
            secretKeyRef:
              name: s3-credentials
              key: access-key-id
  sharedOptions: {path-style: "true"}
  accessModes: [ReadOnlyMany]
  nodeAffinity:
    required:
      nodeSelectorTerms:
        - matchExpressions:
            - {key: fluid.io/cache, operator: In, values: ["true"]}
  placement: Exclusive
status:
  phase: Bound
  ufsTotal: 52.18GiB
  fileNum: "1281167"
  cacheStates: {cacheCapacity: 4.00GiB, cached: 1.20GiB, cachedPercentage: 2.3%, cacheHitRatio: 81.0%}
  conditions:
    - {type: Ready, status: "True", reason: DatasetReady, lastUpdateTime: "2024-05-01T10:00:00Z"}
"#;

    #[test]
    fn fluid_dataset_yaml_deserializes() {
        let d: Dataset = serde_yaml::from_str(FLUID_DATASET).unwrap();
        assert_eq!(d.metadata.name.as_deref(), Some("imagenet"));
        assert_eq!(d.metadata.namespace.as_deref(), Some("ml"));
        let m = &d.spec.mounts[0];
        assert_eq!(m.mount_point, "s3://imagenet/train");
        assert_eq!(m.name, "train");
        assert_eq!(m.path.as_deref(), Some("/"));
        assert!(m.read_only);
        assert_eq!(m.options["region"], "us-east-1");
        assert_eq!(m.encrypt_options[0].name, "access-key-id");
        let secret = &m.encrypt_options[0].value_from.secret_key_ref;
        assert_eq!(
            (secret.name.as_str(), secret.key.as_str()),
            ("s3-credentials", "access-key-id")
        );
        assert_eq!(d.spec.shared_options["path-style"], "true");
        assert_eq!(d.spec.access_modes, ["ReadOnlyMany"]);
        let required = d
            .spec
            .node_affinity
            .as_ref()
            .unwrap()
            .required
            .as_ref()
            .unwrap();
        let expr = &required.node_selector_terms[0]
            .match_expressions
            .as_ref()
            .unwrap()[0];
        assert_eq!(
            (expr.key.as_str(), expr.operator.as_str()),
            ("fluid.io/cache", "In")
        );
        assert_eq!(d.spec.placement, Placement::Exclusive);
        let status = d.status.as_ref().unwrap();
        assert_eq!(status.phase, Some(DatasetPhase::Bound));
        assert_eq!(status.ufs_total.as_deref(), Some("52.18GiB"));
        assert_eq!(status.file_num.as_deref(), Some("1281167"));
        let cache = status.cache_states.as_ref().unwrap();
        assert_eq!(cache.cached_percentage.as_deref(), Some("2.3%"));
        assert_eq!(cache.cache_hit_ratio.as_deref(), Some("81.0%"));
        assert_eq!(status.conditions[0].status, ConditionStatus::True);
        assert!(status.conditions[0].last_update_time.is_some());

        // A round trip keeps Fluid's field names.
        let again: Dataset = serde_json::from_value(serde_json::to_value(&d).unwrap()).unwrap();
        assert_eq!(again, d);
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(
            json["spec"]["mounts"][0]["mountPoint"],
            "s3://imagenet/train"
        );
        assert_eq!(json["spec"]["mounts"][0]["readOnly"], true);
    }

    #[test]
    fn minimal_dataset_gets_fluid_defaults() {
        let d: Dataset = serde_yaml::from_str(
            "{apiVersion: data.fluid.io/v1alpha1, kind: Dataset, metadata: {name: d}, spec: {mounts: [{mountPoint: 'local:///data'}]}}",
        )
        .unwrap();
        assert_eq!(d.spec.placement, Placement::Shared);
        assert_eq!(d.spec.mounts[0].name, "");
        assert!(!d.spec.mounts[0].read_only);
        assert!(d.status.is_none());
        // No mounts at all is a Fluid user's error, not an empty Dataset.
        assert!(serde_yaml::from_str::<DatasetSpec>("{}").is_err());
    }

    #[test]
    fn mount_converts_to_the_node_mount_spec() {
        let d: Dataset = serde_yaml::from_str(FLUID_DATASET).unwrap();
        let spec: fluid_volume::dataset::MountSpec = d.spec.mounts[0].clone().into();
        assert_eq!(spec.mount_point, "s3://imagenet/train");
        assert_eq!(spec.name, "train");
        assert_eq!(spec.path.as_deref(), Some("/"));
        assert!(spec.read_only);
        assert_eq!(spec.options, d.spec.mounts[0].options);
        let encrypt = serde_json::to_value(spec.encrypt_options.unwrap()).unwrap();
        assert_eq!(
            encrypt[0]["valueFrom"]["secretKeyRef"]["name"],
            "s3-credentials"
        );
        // The same YAML read as the node's type gives the same mount.
        let mount_yaml = serde_yaml::to_string(&d.spec.mounts[0]).unwrap();
        let direct: fluid_volume::dataset::MountSpec = serde_yaml::from_str(&mount_yaml).unwrap();
        assert_eq!(direct.mount_point, "s3://imagenet/train");
        assert_eq!(direct.path.as_deref(), Some("/"));
        let plain = DatasetMount {
            mount_point: "local:///x".into(),
            name: "x".into(),
            path: None,
            options: BTreeMap::new(),
            read_only: false,
            encrypt_options: vec![],
        };
        assert!(
            fluid_volume::dataset::MountSpec::from(plain)
                .encrypt_options
                .is_none()
        );
    }

    #[test]
    fn cache_runtime_yaml_deserializes() {
        let r: CacheRuntime = serde_yaml::from_str(
            r#"
apiVersion: data.fluid.io/v1alpha1
kind: CacheRuntime
metadata: {name: imagenet, namespace: ml}
spec:
  tieredstore:
    levels:
      - {mediumtype: MEM, quota: 2Gi, high: "0.95", low: "0.7"}
      - {mediumtype: SSD, path: /var/cache/fluid, quota: 100Gi}
  blockSize: 4MiB
  fuse:
    nodeSelector: {fluid.io/fuse: "true"}
status: {fuseNumberReady: 2, fusePhase: Ready}
"#,
        )
        .unwrap();
        let levels = &r.spec.tieredstore.levels;
        assert_eq!(levels[0].mediumtype, MediumType::MEM);
        assert_eq!(levels[0].quota, "2Gi");
        assert_eq!(levels[0].high.as_deref(), Some("0.95"));
        assert_eq!(levels[1].path.as_deref(), Some("/var/cache/fluid"));
        assert_eq!(r.spec.block_size.as_deref(), Some("4MiB"));
        assert_eq!(r.spec.fuse.node_selector["fluid.io/fuse"], "true");
        assert_eq!(r.spec.fuse.clean_policy, CleanPolicy::OnRuntimeDeleted);
        let status = r.status.unwrap();
        assert_eq!(
            (status.fuse_number_ready, status.fuse_number_scheduled),
            (2, 0)
        );
        assert_eq!(status.fuse_phase, Some(RuntimePhase::Ready));
        assert!(serde_yaml::from_str::<Level>("{mediumtype: NVME, quota: 1Gi}").is_err());
    }

    fn crd_json(
        crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    ) -> Value {
        serde_json::to_value(crd).unwrap()
    }

    fn columns(crd: &Value) -> Vec<(String, String, String)> {
        crd["spec"]["versions"][0]["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                let s = |k: &str| c[k].as_str().unwrap().to_string();
                (s("name"), s("type"), s("jsonPath"))
            })
            .collect()
    }

    fn col(name: &str, ty: &str, path: &str) -> (String, String, String) {
        (name.into(), ty.into(), path.into())
    }

    #[test]
    fn dataset_crd_has_fluid_names_columns_and_validation() {
        let crd = crd_json(&Dataset::crd());
        assert_eq!(crd["metadata"]["name"], "datasets.data.fluid.io");
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        let names = &crd["spec"]["names"];
        assert_eq!(
            (names["kind"].as_str(), names["plural"].as_str()),
            (Some("Dataset"), Some("datasets"))
        );
        assert!(
            names["shortNames"]
                .as_array()
                .is_none_or(|s| !s.contains(&json!("ds")))
        );
        assert_eq!(names["categories"], json!(["fluid"]));
        let version = &crd["spec"]["versions"][0];
        assert_eq!(version["name"], VERSION);
        assert_eq!(version["subresources"]["status"], json!({}));
        assert_eq!(
            columns(&crd)
                .into_iter()
                .filter(|c| c.0 != "Total Files")
                .collect::<Vec<_>>(),
            [
                col("Ufs Total Size", "string", ".status.ufsTotal"),
                col("Cached", "string", ".status.cacheStates.cached"),
                col(
                    "Cache Capacity",
                    "string",
                    ".status.cacheStates.cacheCapacity"
                ),
                col(
                    "Cached Percentage",
                    "string",
                    ".status.cacheStates.cachedPercentage"
                ),
                col("Phase", "string", ".status.phase"),
                col("Age", "date", ".metadata.creationTimestamp"),
            ]
        );

        let schema = &version["schema"]["openAPIV3Schema"]["properties"];
        let spec = &schema["spec"];
        assert_eq!(spec["required"], json!(["mounts"]));
        assert_eq!(spec["properties"]["mounts"]["minItems"], 1);
        let mount = &spec["properties"]["mounts"]["items"];
        assert_eq!(mount["required"], json!(["mountPoint"]));
        assert_eq!(
            mount["properties"]["mountPoint"]["pattern"],
            MOUNT_POINT_PATTERN
        );
        let secret = &mount["properties"]["encryptOptions"]["items"]["properties"]["valueFrom"]["properties"]
            ["secretKeyRef"];
        assert_eq!(secret["required"], json!(["key", "name"]));
        assert_eq!(
            spec["properties"]["placement"]["enum"],
            json!(["Exclusive", "Shared"])
        );
        assert_eq!(spec["properties"]["placement"]["default"], "Shared");
        assert!(spec["properties"]["nodeAffinity"]["properties"]["required"]["properties"]
            ["nodeSelectorTerms"]
            .is_object());
        let status = &schema["status"]["properties"];
        assert!(status["phase"].get("nullable").is_none());
        assert_eq!(
            status["phase"]["enum"],
            json!(["Pending", "Bound", "NotBound", "Failed"])
        );
        assert_eq!(
            status["conditions"]["items"]["properties"]["status"]["enum"],
            json!(["True", "False", "Unknown"])
        );
        for key in [
            "cacheCapacity",
            "cached",
            "cachedPercentage",
            "cacheHitRatio",
        ] {
            assert_eq!(
                status["cacheStates"]["properties"][key]["type"], "string",
                "{key}"
            );
        }
    }

    #[test]
    fn cache_runtime_crd_has_columns_and_validation() {
        let crd = crd_json(&CacheRuntime::crd());
        assert_eq!(crd["metadata"]["name"], "cacheruntimes.data.fluid.io");
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        let version = &crd["spec"]["versions"][0];
        assert_eq!(version["subresources"]["status"], json!({}));
        assert_eq!(
            columns(&crd)
                .into_iter()
                .filter(|c| c.0 != "Desired Fuses")
                .collect::<Vec<_>>(),
            [
                col("Ready Fuses", "integer", ".status.fuseNumberReady"),
                col("Fuse Phase", "string", ".status.fusePhase"),
                col("Age", "date", ".metadata.creationTimestamp"),
            ]
        );
        let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
        assert_eq!(spec["required"], json!(["tieredstore"]));
        let levels = &spec["properties"]["tieredstore"]["properties"]["levels"];
        assert_eq!(levels["minItems"], 1);
        assert_eq!(levels["items"]["required"], json!(["mediumtype", "quota"]));
        assert_eq!(
            levels["items"]["properties"]["mediumtype"]["enum"],
            json!(["MEM", "SSD", "HDD"])
        );
        let clean = &spec["properties"]["fuse"]["properties"]["cleanPolicy"];
        assert_eq!(clean["enum"], json!(["OnDemand", "OnRuntimeDeleted"]));
        assert_eq!(clean["default"], "OnRuntimeDeleted");
        let status = &version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"];
        assert_eq!(
            status["fusePhase"]["enum"],
            json!(["NotReady", "PartialReady", "Ready"])
        );
        assert_eq!(status["fuseNumberReady"]["type"], "integer");
    }

    /// The chart's CRDs (`deploy/charts/fluid/crds/`) are exactly what the types generate (what
    /// `fluid-csi-controller crds` prints), so a change to the types cannot ship stale YAML.
    #[test]
    fn the_charts_crds_are_the_generated_ones() {
        const REGENERATE: &str = "regenerate with: make crds";
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/charts/fluid/crds");
        let mut committed = String::new();
        for file in CRD_FILES {
            let path = dir.join(file);
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}; {REGENERATE}", path.display()));
            assert!(
                text.starts_with("---\n") && !text.contains("\n---\n"),
                "{file} must hold exactly one document starting with ---; {REGENERATE}"
            );
            committed.push_str(&text);
        }
        let generated = crds_yaml();
        assert!(
            generated == committed,
            "deploy/charts/fluid/crds/ differs from `fluid-csi-controller crds`; {REGENERATE}"
        );
        for (kind, plural) in [
            ("Dataset", "datasets"),
            ("CacheRuntime", "cacheruntimes"),
            ("DataLoad", "dataloads"),
        ] {
            assert!(
                generated.contains(&format!("name: {plural}.data.fluid.io\n")),
                "{plural}"
            );
            assert!(generated.contains(&format!("kind: {kind}\n")), "{kind}");
        }
    }

    #[test]
    fn yaml_stream_is_the_files_concatenated() {
        let stream = crds_yaml();
        let docs: Vec<&str> = stream.split("---\n").filter(|d| !d.is_empty()).collect();
        assert_eq!(docs.len(), CRD_FILES.len());
        for (doc, crd) in docs.iter().zip(crds()) {
            assert_eq!(*doc, crd_yaml(&crd));
            let back: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition =
                serde_yaml::from_str(doc).unwrap();
            assert_eq!(back, crd);
        }
    }
}
