//! The members of each Dataset's shared cache, from Kubernetes: the Nodes labelled as holding
//! the Dataset (`fluid.io/s-<namespace>-<name>`) with the cache endpoint their node plugin
//! annotates. Written for each Dataset staged here to a peers file the Dataset's daemons read
//! again when it changes (`fluid-fuse mount --peers-file`), so nodes join and leave the cache
//! without a restart. A daemon asks a peer's node plugin for a block (ReadBlock on the cache
//! endpoint, with the shared token), which passes it to its own daemon of the Dataset.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::api::{Api, ListParams};

use crate::supervisor::Supervisor;
use fluid_volume::labels::{CACHE_ENDPOINT_ANNOTATION, dataset_label_key};

/// How often the members are looked up.
const EVERY: Duration = Duration::from_secs(5);

/// The peers file's text: `NODE tcp://ENDPOINT` for each member with an endpoint, sorted.
pub fn text(nodes: &[Node]) -> String {
    let mut members = BTreeMap::new();
    for n in nodes {
        if let Some(ep) = n.annotations().get(CACHE_ENDPOINT_ANNOTATION) {
            members.insert(n.name_any(), format!("tcp://{ep}"));
        }
    }
    members
        .iter()
        .map(|(name, ep)| format!("{name} {ep}\n"))
        .collect()
}

/// Keeps the peers file of every Dataset staged here current, until the process ends.
pub fn spawn(sup: Arc<Supervisor>, client: kube::Client) -> tokio::task::JoinHandle<()> {
    let nodes: Api<Node> = Api::all(client);
    tokio::spawn(async move {
        loop {
            for dataset in sup.staged_datasets() {
                if let Err(e) = refresh(&sup, &nodes, &dataset).await {
                    tracing::warn!(dataset, "the members of its shared cache: {e}");
                }
            }
            tokio::time::sleep(EVERY).await;
        }
    })
}

async fn refresh(sup: &Supervisor, nodes: &Api<Node>, dataset: &str) -> Result<(), String> {
    let (ns, name) = fluid_volume::context::parse_dataset(dataset)
        .ok_or_else(|| format!("{dataset:?} is not namespace/name"))?;
    let key = dataset_label_key(ns, name);
    let listed = nodes
        .list(&ListParams::default().labels(&key))
        .await
        .map_err(|e| format!("listing the Nodes labelled {key}: {e}"))?;
    let file = sup.state().peers_file(dataset);
    fluid_volume::atomic::write_if_changed(&file, text(&listed.items).as_bytes(), 0o644)
        .map_err(|e| format!("{}: {e}", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ObjectMeta;

    #[test]
    fn members_are_the_nodes_with_an_endpoint() {
        let node = |name: &str, ep: Option<&str>| Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                annotations: ep.map(|e| {
                    BTreeMap::from([(CACHE_ENDPOINT_ANNOTATION.to_string(), e.to_string())])
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let text = text(&[
            node("n2", Some("10.0.0.2:7788")),
            node("n1", Some("10.0.0.1:7788")),
            node("n3", None),
        ]);
        assert_eq!(text, "n1 tcp://10.0.0.1:7788\nn2 tcp://10.0.0.2:7788\n");
    }
}
