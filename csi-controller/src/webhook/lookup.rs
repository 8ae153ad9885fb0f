//! Which Datasets a pod's PVCs belong to, asked of the API server.
//!
//! A PVC belongs to Dataset `<name>` when it carries the label `fluid.io/dataset: <name>`, as
//! the reconciler's PVCs do. A PVC without the label whose name is that of a Dataset of the same
//! namespace belongs to it too: PVCs made before the label existed, or by hand after Fluid's
//! convention (PVC named like its Dataset). Datasets never cross namespaces, so only the pod's
//! namespace is asked.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::Api;

use super::review::Resolver;
use crate::crd::Dataset;
use crate::error::Result;
use crate::reconcile::objects::LABEL_NAME;

pub struct KubeResolver {
    client: kube::Client,
}

impl KubeResolver {
    pub fn new(client: kube::Client) -> Self {
        KubeResolver { client }
    }
}

impl Resolver for KubeResolver {
    async fn datasets(&self, namespace: &str, claims: &[String]) -> Result<BTreeSet<String>> {
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), namespace);
        let datasets: Api<Dataset> = Api::namespaced(self.client.clone(), namespace);
        let mut found = BTreeSet::new();
        for claim in claims {
            // A pod may be created before its PVC; it then has no Dataset to follow.
            let Some(pvc) = pvcs.get_opt(claim).await? else {
                continue;
            };
            let labelled = pvc
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_NAME))
                .filter(|name| !name.is_empty());
            if let Some(name) = labelled {
                found.insert(name.clone());
            } else if datasets.get_opt(claim).await?.is_some() {
                found.insert(claim.clone());
            }
        }
        Ok(found)
    }
}
