//! The Controller service against a catalogue and a store in a temp directory.

use std::path::Path;

use super::*;
use fluid_proto::csi::volume_capability::{AccessMode, BlockVolume, MountVolume};

fn catalogue() -> Catalogue {
    Catalogue::parse(
        r#"
apiVersion: data.fluid.io/v1alpha1
kind: Dataset
metadata: {name: imagenet, namespace: ml}
spec:
  mounts: [{mountPoint: "s3://imagenet/train", name: train, options: {endpoint: "http://127.0.0.1:8333"}}]
  tiers: ["mem:1GiB"]
---
apiVersion: data.fluid.io/v1alpha1
kind: Dataset
metadata: {name: other, namespace: team-b}
spec:
  mounts: [{mountPoint: "local:///tmp", name: data}]
"#,
        Path::new("test.yaml"),
    )
    .unwrap()
}

fn params(kv: &[(&str, &str)]) -> HashMap<String, String> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn invalid_field(r: Result<Plan>) -> String {
    match r {
        Err(Error::Invalid { field, .. }) => field,
        other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
    }
}

#[test]
fn volume_ids_are_deterministic_bounded_and_distinct() {
    let a = volume_id("pvc-0b6f7c3e-1234");
    assert_eq!(a, volume_id("pvc-0b6f7c3e-1234"));
    assert!(
        a.starts_with("fluid-") && a.ends_with("-pvc-0b6f7c3e-1234"),
        "{a}"
    );
    assert_ne!(volume_id("A_b"), volume_id("a-b"));
    let long = "x".repeat(300);
    assert_eq!(volume_id(&long).len(), MAX_VOLUME_ID);
    for name in ["é/é", "---", "Ünïcode name with spaces", &"ß".repeat(200)] {
        let id = volume_id(name);
        assert!(id.len() <= MAX_VOLUME_ID, "{id}");
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "{id}"
        );
        assert!(!id.ends_with('-'), "{id}");
    }
}

#[test]
fn plans_a_dataset_in_the_pvc_namespace_only() {
    let c = catalogue();
    let p = plan(
        &params(&[
            ("dataset", "imagenet"),
            (PVC_NAMESPACE, "ml"),
            ("csi.storage.k8s.io/pvc/name", "data"),
        ]),
        &c,
    )
    .unwrap();
    assert_eq!(p.namespace, "ml");
    assert_eq!(p.context.dataset.as_deref(), Some("ml/imagenet"));
    assert_eq!(p.context.tiers.unwrap().to_string(), "mem:1GiB");
    assert_eq!(
        p.parameters,
        BTreeMap::from([("dataset".to_string(), "imagenet".to_string())])
    );
    // From another namespace, or with a namespace in the name: refused.
    let e = plan(&params(&[("dataset", "other"), (PVC_NAMESPACE, "ml")]), &c).unwrap_err();
    assert!(
        matches!(&e, Error::NotFound(m) if m.contains("parameters.dataset") && m.contains("\"ml\"")),
        "{e}"
    );
    assert!(
        plan(&params(&[("dataset", "imagenet")]), &c).is_err(),
        "default namespace has no imagenet"
    );
    assert_eq!(
        invalid_field(plan(
            &params(&[("dataset", "team-b/other"), (PVC_NAMESPACE, "ml")]),
            &c
        )),
        "parameters.dataset"
    );
    // Overrides.
    let p = plan(
        &params(&[
            ("dataset", "other"),
            (PVC_NAMESPACE, "team-b"),
            ("tiers", "mem:2GiB; ssd:/c:1GiB"),
            ("blockSize", "1MiB"),
            ("subPath", "a/b/"),
        ]),
        &c,
    )
    .unwrap();
    assert_eq!(
        p.context.tiers.as_ref().unwrap().specs(),
        Tiers::parse_list("mem:2GiB;ssd:/c:1GiB", "t")
            .unwrap()
            .specs()
    );
    assert_eq!(p.context.block_size.unwrap().to_string(), "1MiB");
    assert_eq!(p.context.sub_path.as_deref(), Some("a/b"));
}

#[test]
fn plans_an_inline_mount_point() {
    let c = Catalogue::default();
    let p = plan(
        &params(&[
            ("mountPoint", "s3://bucket/x"),
            ("mountOptions", "endpoint=http://h:1, path-style=true"),
        ]),
        &c,
    )
    .unwrap();
    assert_eq!(p.context.dataset, None);
    assert_eq!(p.context.mounts.len(), 1);
    assert_eq!(p.context.mounts[0].path.as_deref(), Some("/"));
    assert_eq!(
        p.context.mounts[0]
            .options
            .get("endpoint")
            .map(String::as_str),
        Some("http://h:1")
    );
    assert_eq!(p.namespace, "default");
}

#[test]
fn refuses_bad_parameters_naming_them() {
    let c = catalogue();
    let field = |kv: &[(&str, &str)]| invalid_field(plan(&params(kv), &c));
    assert_eq!(field(&[]), "parameters");
    assert_eq!(
        field(&[("dataset", "imagenet"), ("mountPoint", "s3://b")]),
        "parameters"
    );
    assert_eq!(field(&[("mountPoint", "ftp://b")]), "parameters.mountPoint");
    for url in ["s3://ak:sk@b", "ak:sk@b"] {
        let e = plan(&params(&[("mountPoint", url)]), &c).unwrap_err();
        assert!(
            matches!(&e, Error::Invalid { field, .. } if field == "parameters.mountPoint"),
            "{e}"
        );
        assert!(!e.to_string().contains("sk@"), "{e}");
    }
    assert_eq!(
        field(&[("mountPoint", "s3://b"), ("mountOptions", "secret-key=x")]),
        "parameters.mountOptions.secret-key"
    );
    assert_eq!(
        field(&[("mountPoint", "s3://b"), ("mountOptions", "novalue")]),
        "parameters.mountOptions"
    );
    assert_eq!(
        field(&[("mountPoint", "s3://b"), ("mountOptions", "a=1,a=2")]),
        "parameters.mountOptions.a"
    );
    assert_eq!(
        field(&[("mountPoint", "s3://b"), ("password", "x")]),
        "parameters.password"
    );
    assert_eq!(
        field(&[("mountPoint", "s3://b"), ("tiers", "mem:lots")]),
        "parameters.tiers"
    );
    assert_eq!(
        field(&[("mountPoint", "s3://b"), ("tiers", ";")]),
        "parameters.tiers"
    );
    assert_eq!(
        field(&[("mountPoint", "s3://b"), ("blockSize", "0")]),
        "parameters.blockSize"
    );
    assert_eq!(
        field(&[("mountPoint", "s3://b"), ("subPath", "../x")]),
        "parameters.subPath"
    );
    assert_eq!(field(&[("mountPoint", "")]), "parameters.mountPoint");
    assert_eq!(
        field(&[
            ("dataset", "imagenet"),
            (PVC_NAMESPACE, "ml"),
            ("mountOptions", "a=b")
        ]),
        "parameters.mountOptions"
    );
    assert_eq!(
        field(&[("mountPoint", "s3://b"), (PVC_NAMESPACE, "Bad_NS")]),
        format!("parameters.{PVC_NAMESPACE}")
    );
    let e = plan(
        &params(&[("mountPoint", "s3://b"), ("color", "red"), ("zz", "1")]),
        &c,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("color, zz"), "{e}");
    // The provisioner's own parameters are accepted, even secret-looking ones.
    assert!(
        plan(
            &params(&[
                ("mountPoint", "s3://b"),
                ("csi.storage.k8s.io/node-stage-secret-name", "s")
            ]),
            &c
        )
        .is_ok()
    );
}

#[test]
fn capacities() {
    let r = |required_bytes, limit_bytes| CapacityRange {
        required_bytes,
        limit_bytes,
    };
    assert_eq!(capacity(None).unwrap(), 0);
    assert_eq!(capacity(Some(&r(10, 0))).unwrap(), 10);
    assert_eq!(capacity(Some(&r(0, 20))).unwrap(), 20);
    assert_eq!(capacity(Some(&r(10, 20))).unwrap(), 10);
    assert!(
        matches!(capacity(Some(&r(20, 10))), Err(Error::Invalid { field, .. }) if field == "capacity_range.limit_bytes")
    );
    assert!(capacity(Some(&r(-1, 0))).is_err());
    assert!(capacity_fits(10, Some(&r(10, 10))));
    assert!(capacity_fits(10, Some(&r(5, 0))));
    assert!(!capacity_fits(10, Some(&r(20, 20))));
    assert!(!capacity_fits(10, Some(&r(0, 5))));
}

fn cap(block: bool, mode: access_mode::Mode) -> VolumeCapability {
    VolumeCapability {
        access_type: Some(if block {
            AccessType::Block(BlockVolume {})
        } else {
            AccessType::Mount(MountVolume::default())
        }),
        access_mode: Some(AccessMode { mode: mode as i32 }),
    }
}

#[tokio::test]
async fn create_is_idempotent_and_serialised() {
    let dir = tempfile::tempdir().unwrap();
    let svc = ControllerService::new(catalogue(), Store::open(dir.path()).unwrap());
    let req = |name: &str, required_bytes| CreateVolumeRequest {
        name: name.to_string(),
        capacity_range: Some(CapacityRange {
            required_bytes,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![cap(false, access_mode::Mode::SingleNodeWriter)],
        parameters: params(&[("mountPoint", "local:///tmp")]),
        ..Default::default()
    };
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let svc = svc.clone();
            let r = req("same", 1 << 30);
            tokio::spawn(async move { svc.create(r).await })
        })
        .collect();
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap().unwrap().volume_id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1);
    assert_eq!(svc.store.lock().await.len(), 1);
    assert!(matches!(
        svc.create(req("same", 2 << 30)).await,
        Err(Error::AlreadyExists(_))
    ));
    let mut other = req("same", 1 << 30);
    other.parameters.insert("blockSize".into(), "1MiB".into());
    assert!(matches!(
        svc.create(other).await,
        Err(Error::AlreadyExists(_))
    ));
    let mut block = req("b", 0);
    block
        .volume_capabilities
        .push(cap(true, access_mode::Mode::SingleNodeWriter));
    assert!(
        matches!(svc.create(block).await, Err(Error::Invalid { field, .. }) if field == "volume_capabilities[1]")
    );
    let mut no_mode = req("b", 0);
    no_mode.volume_capabilities[0].access_mode = None;
    assert!(svc.create(no_mode).await.is_err());
}

#[tokio::test]
async fn validate_confirms_mounts_only() {
    let dir = tempfile::tempdir().unwrap();
    let svc = ControllerService::new(catalogue(), Store::open(dir.path()).unwrap());
    let vol = svc
        .create(CreateVolumeRequest {
            name: "v".into(),
            volume_capabilities: vec![cap(false, access_mode::Mode::MultiNodeReaderOnly)],
            parameters: params(&[("dataset", "other"), (PVC_NAMESPACE, "team-b")]),
            ..Default::default()
        })
        .await
        .unwrap();
    let validate = |caps: Vec<VolumeCapability>| ValidateVolumeCapabilitiesRequest {
        volume_id: vol.volume_id.clone(),
        volume_capabilities: caps,
        ..Default::default()
    };
    let ok = svc
        .validate(validate(vec![cap(
            false,
            access_mode::Mode::MultiNodeMultiWriter,
        )]))
        .await
        .unwrap();
    assert!(ok.confirmed.is_some() && ok.message.is_empty());
    let no = svc
        .validate(validate(vec![cap(
            true,
            access_mode::Mode::SingleNodeWriter,
        )]))
        .await
        .unwrap();
    assert!(
        no.confirmed.is_none() && no.message.contains("block"),
        "{}",
        no.message
    );
    assert!(matches!(
        svc.validate(validate(vec![])).await,
        Err(Error::Invalid { .. })
    ));
    let mut unknown = validate(vec![cap(false, access_mode::Mode::SingleNodeWriter)]);
    unknown.volume_id = "nope".into();
    assert!(matches!(
        svc.validate(unknown).await,
        Err(Error::NotFound(_))
    ));
}
