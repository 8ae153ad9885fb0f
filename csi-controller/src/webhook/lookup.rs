//! Which Datasets a pod's PVCs belong to, asked of the API server.
//!
//! A PVC belongs to Dataset `<name>` when it carries the label `fluid.io/dataset: <name>`, as
//! the reconciler's PVCs do. A PVC without the label whose name is that of a Dataset of the same
//! namespace belongs to it too: PVCs made before the label existed, or by hand after Fluid's
//! convention (PVC named like its Dataset). Datasets never cross namespaces, so only the pod's
//! namespace is asked. Each Dataset is read for its `placement`: a pod with no Exclusive one
//! is kept off exclusive nodes. A claim is a Fluid volume (whose mounts get HostToContainer
//! propagation) when it belongs to a Dataset or is bound to a PV of this driver (a dynamically
//! provisioned one).

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::Api;

use super::mutate::PodDatasets;
use super::review::Resolver;
use crate::crd::{Dataset, Placement};
use crate::error::Result;
use crate::reconcile::objects::LABEL_NAME;

pub struct KubeResolver {
    client: kube::Client,
    driver: String,
}

impl KubeResolver {
    pub fn new(client: kube::Client, driver: &str) -> Self {
        KubeResolver {
            client,
            driver: driver.to_string(),
        }
    }

    /// Whether the claim is bound to a PV of this CSI driver.
    async fn bound_to_driver(&self, pvc: &PersistentVolumeClaim) -> Result<bool> {
        let Some(volume) = pvc.spec.as_ref().and_then(|s| s.volume_name.as_deref()) else {
            return Ok(false);
        };
        let pvs: Api<PersistentVolume> = Api::all(self.client.clone());
        let pv = pvs.get_opt(volume).await?;
        Ok(pv
            .and_then(|pv| pv.spec)
            .and_then(|s| s.csi)
            .is_some_and(|csi| csi.driver == self.driver))
    }
}

impl Resolver for KubeResolver {
    async fn datasets(&self, namespace: &str, claims: &[String]) -> Result<PodDatasets> {
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), namespace);
        let datasets: Api<Dataset> = Api::namespaced(self.client.clone(), namespace);
        let mut found = PodDatasets {
            names: BTreeSet::new(),
            avoid_exclusive_nodes: true,
            fluid_claims: BTreeSet::new(),
        };
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
            let name = labelled.unwrap_or(claim);
            let Some(ds) = datasets.get_opt(name).await? else {
                // A labelled PVC whose Dataset is gone still names it.
                if labelled.is_some() {
                    found.names.insert(name.clone());
                    found.fluid_claims.insert(claim.clone());
                } else if self.bound_to_driver(&pvc).await? {
                    found.fluid_claims.insert(claim.clone());
                }
                continue;
            };
            found.fluid_claims.insert(claim.clone());
            if ds.spec.placement == Placement::Exclusive {
                found.avoid_exclusive_nodes = false;
            }
            found.names.insert(name.clone());
        }
        Ok(found)
    }
}
