//! One AdmissionReview in, one out: decide which Datasets a pod mounts (through a
//! [`Resolver`]), and answer `allowed: true` with the patch of [`mutate`], if any.
//!
//! The webhook never refuses a pod: anything it cannot judge (an operation or kind it does not
//! handle, an object that is not a pod, an API server that does not answer in time) is allowed
//! unchanged, so a fault here costs cache locality, never a workload.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};

use super::mutate::{self, PodDatasets};
use crate::error::{Error, Result};

/// How long the Dataset lookups of one review may take in all: well inside the 5 s the
/// chart gives the API server to wait for the webhook, so a slow lookup still gets an answer.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

/// Which of a namespace's PVCs belong to Datasets.
pub trait Resolver {
    /// The Datasets of `namespace` that the PVCs `claims` belong to; claims of no Dataset (or
    /// that do not exist yet) are left out.
    fn datasets(
        &self,
        namespace: &str,
        claims: &[String],
    ) -> impl Future<Output = Result<PodDatasets>> + Send;
}

/// Answers the AdmissionReview `body` (JSON), giving the Dataset lookups `timeout` (the server
/// passes [`LOOKUP_TIMEOUT`]). An `Error::Invalid` means the body is not an AdmissionReview with
/// a request: the caller answers HTTP 400.
pub async fn review<R: Resolver>(body: &[u8], resolver: &R, timeout: Duration) -> Result<Vec<u8>> {
    let review: AdmissionReview<DynamicObject> = serde_json::from_slice(body)
        .map_err(|e| Error::invalid("AdmissionReview", format!("not an AdmissionReview: {e}")))?;
    let request: AdmissionRequest<DynamicObject> = review
        .try_into()
        .map_err(|_| Error::invalid("AdmissionReview", "it has no request"))?;
    let mut response = AdmissionResponse::from(&request);
    let ops = mutation(&request, resolver, timeout).await;
    if !ops.is_empty() {
        let unpatched = response.clone();
        response = response
            .with_patch(json_patch::Patch(ops))
            .unwrap_or_else(|e| {
                tracing::warn!(uid = %request.uid, "allowing the pod unchanged: {e}");
                unpatched
            });
    }
    serde_json::to_vec(&response.into_review())
        .map_err(|e| Error::Webhook(format!("encoding the AdmissionReview response: {e}")))
}

/// The patch for `request`: empty unless it creates a pod that mounts Datasets.
async fn mutation<R: Resolver>(
    request: &AdmissionRequest<DynamicObject>,
    resolver: &R,
    timeout: Duration,
) -> Vec<json_patch::PatchOperation> {
    let is_pod = request.kind.group.is_empty() && request.kind.kind == "Pod";
    if request.operation != Operation::Create || !is_pod || request.sub_resource.is_some() {
        return Vec::new();
    }
    let Some(object) = &request.object else {
        return Vec::new();
    };
    let pod: Pod = match serde_json::to_value(object).and_then(serde_json::from_value) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(uid = %request.uid, "allowing the pod unchanged: it does not decode as a Pod: {e}");
            return Vec::new();
        }
    };
    // On create the object's own namespace may be empty; the request's is the one it gets.
    let Some(namespace) = request
        .namespace
        .clone()
        .or_else(|| pod.metadata.namespace.clone())
    else {
        return Vec::new();
    };
    let claims = mutate::claim_names(&pod);
    // Pods without PVCs (most of a cluster) cost no API call.
    if claims.is_empty() {
        return Vec::new();
    }
    let pod_name = pod
        .metadata
        .name
        .clone()
        .or_else(|| pod.metadata.generate_name.clone())
        .unwrap_or_default();
    let datasets = match tokio::time::timeout(timeout, resolver.datasets(&namespace, &claims)).await
    {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => {
            tracing::warn!(%namespace, pod = %pod_name, "allowing the pod unchanged: looking up its Datasets failed: {e}");
            return Vec::new();
        }
        Err(_) => {
            tracing::warn!(%namespace, pod = %pod_name, "allowing the pod unchanged: looking up its Datasets took over {timeout:?}");
            return Vec::new();
        }
    };
    let ops = mutate::patch(&pod, &namespace, &datasets);
    if !ops.is_empty() {
        tracing::info!(%namespace, pod = %pod_name, datasets = ?datasets.names, "adding cache node affinity");
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// Claims named like a Dataset belong to it; `fail` makes every lookup fail, `hang` makes
    /// it never answer.
    struct Fake {
        datasets: Vec<&'static str>,
        fail: bool,
        hang: bool,
    }

    impl Resolver for Fake {
        async fn datasets(&self, _namespace: &str, claims: &[String]) -> Result<PodDatasets> {
            if self.hang {
                std::future::pending::<()>().await;
            }
            if self.fail {
                return Err(Error::NotFound("the API server is away".into()));
            }
            let names: std::collections::BTreeSet<String> = claims
                .iter()
                .filter(|c| self.datasets.contains(&c.as_str()))
                .cloned()
                .collect();
            Ok(PodDatasets {
                fluid_claims: names.clone(),
                names,
                avoid_exclusive_nodes: false,
            })
        }
    }

    fn fake() -> Fake {
        Fake {
            datasets: vec!["imagenet"],
            fail: false,
            hang: false,
        }
    }

    fn request(operation: &str, claim: &str) -> Value {
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "0c9a8d74-9cb7-44dd-b98e-09fd62def2f4",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "ml",
                "operation": operation,
                "userInfo": {"username": "admin"},
                "object": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"generateName": "trainer-"},
                    "spec": {
                        "containers": [{"name": "c", "image": "busybox"}],
                        "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": claim}}]
                    }
                },
                "oldObject": null,
                "dryRun": false
            }
        })
    }

    async fn answer(body: &Value, resolver: &Fake) -> Value {
        let out = review(
            body.to_string().as_bytes(),
            resolver,
            Duration::from_millis(200),
        )
        .await
        .unwrap();
        serde_json::from_slice(&out).unwrap()
    }

    /// The patch as kube serializes it (bytes as a JSON array, which the API server decodes
    /// like base64 into its []byte).
    fn patch_of(response: &Value) -> Option<Value> {
        let bytes: Vec<u8> =
            serde_json::from_value(response["response"].get("patch")?.clone()).unwrap();
        Some(serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn a_pod_with_a_dataset_gets_a_patch() {
        let out = answer(&request("CREATE", "imagenet"), &fake()).await;
        assert_eq!(out["apiVersion"], json!("admission.k8s.io/v1"));
        assert_eq!(out["kind"], json!("AdmissionReview"));
        assert_eq!(
            out["response"]["uid"],
            json!("0c9a8d74-9cb7-44dd-b98e-09fd62def2f4")
        );
        assert_eq!(out["response"]["allowed"], json!(true));
        assert_eq!(out["response"]["patchType"], json!("JSONPatch"));
        let patch = patch_of(&out).unwrap();
        assert_eq!(patch[0]["op"], json!("add"));
        assert_eq!(patch[0]["path"], json!("/spec/affinity"));
        assert_eq!(
            patch[0]["value"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
                ["weight"],
            json!(100)
        );
    }

    #[tokio::test]
    async fn allowed_unchanged_otherwise() {
        let unchanged = |out: &Value| {
            assert_eq!(out["response"]["allowed"], json!(true), "{out}");
            assert!(out["response"].get("patch").is_none(), "{out}");
        };
        // No Dataset behind the claim.
        unchanged(&answer(&request("CREATE", "scratch"), &fake()).await);
        // Not a create.
        unchanged(&answer(&request("UPDATE", "imagenet"), &fake()).await);
        // The lookup fails, or never answers.
        let failing = Fake {
            fail: true,
            ..fake()
        };
        unchanged(&answer(&request("CREATE", "imagenet"), &failing).await);
        let hanging = Fake {
            hang: true,
            ..fake()
        };
        unchanged(&answer(&request("CREATE", "imagenet"), &hanging).await);
        // Not a pod.
        let mut other = request("CREATE", "imagenet");
        other["request"]["kind"] = json!({"group": "apps", "version": "v1", "kind": "Deployment"});
        unchanged(&answer(&other, &fake()).await);
        // A pod that does not decode as one.
        let mut bad = request("CREATE", "imagenet");
        bad["request"]["object"]["spec"]["containers"] = json!("not a list");
        unchanged(&answer(&bad, &fake()).await);
    }

    #[tokio::test]
    async fn malformed_reviews_are_invalid() {
        for body in [
            b"not json".to_vec(),
            br#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}"#.to_vec(),
            br#"{"request": 7}"#.to_vec(),
        ] {
            match review(&body, &fake(), LOOKUP_TIMEOUT).await {
                Err(Error::Invalid { field, .. }) => assert_eq!(field, "AdmissionReview"),
                other => panic!("{}: {other:?}", String::from_utf8_lossy(&body)),
            }
        }
    }
}
