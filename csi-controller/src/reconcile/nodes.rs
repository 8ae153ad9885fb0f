//! The nodes that serve a Dataset (labelled `fluid.io/s-<ns>-<name>=true` by their node plugin)
//! and their cache endpoints (`fluid.io/cache-endpoint`), for stats, warm-ups and evictions.

use std::time::Duration;

use fluid_proto::Endpoint;
use fluid_proto::cache_auth::{BearerToken, NodeClient};
use fluid_proto::fluid::{GetStatsRequest, GetStatsResponse, ReleaseRequest};
use fluid_volume::labels::{CACHE_ENDPOINT_ANNOTATION, DATASET_LABEL_VALUE, dataset_label_key};
use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::api::{Api, ListParams};

use crate::error::{Error, Result};

/// How long connecting to a node's cache endpoint may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a node may take to answer `GetStats`.
pub const STATS_TIMEOUT: Duration = Duration::from_secs(5);

/// A node serving a Dataset: its name and the address of its cache endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServingNode {
    pub name: String,
    pub endpoint: String,
}

/// Of `nodes`, those labelled for the Dataset that advertise a cache endpoint, by name.
pub fn serving(nodes: &[Node], namespace: &str, name: &str) -> Vec<ServingNode> {
    let label = dataset_label_key(namespace, name);
    let mut out: Vec<ServingNode> = nodes
        .iter()
        .filter(|n| n.labels().get(&label).map(String::as_str) == Some(DATASET_LABEL_VALUE))
        .filter_map(|n| {
            let endpoint = n.annotations().get(CACHE_ENDPOINT_ANNOTATION)?.clone();
            Some(ServingNode {
                name: n.name_any(),
                endpoint,
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

impl ServingNode {
    /// An error of this node: unreachable, or a call it refused.
    pub fn error(&self, message: impl Into<String>) -> Error {
        Error::Node {
            node: self.name.clone(),
            message: message.into(),
        }
    }

    /// A call this node refused.
    pub fn refused(&self, status: tonic::Status) -> Error {
        self.error(status.message())
    }
}

/// One node's `GetStats` of `dataset`, within `STATS_TIMEOUT`.
pub async fn stats(
    node: &ServingNode,
    auth: &BearerToken,
    dataset: &str,
) -> Result<GetStatsResponse> {
    let call = async {
        let reply = connect(node, auth)
            .await?
            .get_stats(GetStatsRequest {
                dataset: dataset.to_string(),
            })
            .await;
        reply.map(|r| r.into_inner()).map_err(|s| node.refused(s))
    };
    tokio::time::timeout(STATS_TIMEOUT, call)
        .await
        .map_err(|_| node.error(format!("no answer within {STATS_TIMEOUT:?}")))?
}

/// Lists the nodes serving one Dataset (one label-selected list call).
pub async fn list_serving(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Vec<ServingNode>> {
    let selector = format!(
        "{}={DATASET_LABEL_VALUE}",
        dataset_label_key(namespace, name)
    );
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default().labels(&selector))
        .await?;
    Ok(serving(&nodes.items, namespace, name))
}

/// A CacheNode client for a node's endpoint (`HOST:PORT`), sending the cache token.
pub async fn connect(node: &ServingNode, auth: &BearerToken) -> Result<NodeClient> {
    let unreachable = |why: String| node.error(why);
    let endpoint: Endpoint = format!("tcp://{}", node.endpoint)
        .parse()
        .map_err(|e: fluid_proto::EndpointError| unreachable(e.to_string()))?;
    let channel = tokio::time::timeout(CONNECT_TIMEOUT, endpoint.connect())
        .await
        .map_err(|_| {
            unreachable(format!(
                "no answer from {} within {CONNECT_TIMEOUT:?}",
                node.endpoint
            ))
        })?
        .map_err(|e| unreachable(e.to_string()))?;
    Ok(auth.client(channel))
}

/// Tells every node serving the Dataset that its CacheRuntime (or the Dataset) is gone, so
/// that daemons kept by cleanPolicy OnRuntimeDeleted stop. Best effort: a node that cannot
/// be reached is logged and asked again at the next reconcile while it keeps the label.
pub async fn release(
    client: &kube::Client,
    auth: &BearerToken,
    namespace: &str,
    name: &str,
) -> Result<()> {
    let dataset = format!("{namespace}/{name}");
    for node in list_serving(client, namespace, name).await? {
        let answer = async {
            connect(&node, auth)
                .await?
                .release(ReleaseRequest {
                    dataset: dataset.clone(),
                })
                .await
                .map_err(|s| node.refused(s))
        }
        .await;
        match answer {
            Ok(a) => {
                let a = a.into_inner();
                if a.stopped > 0 || a.in_use > 0 {
                    tracing::info!(
                        dataset,
                        node = node.name,
                        "released: {} kept daemon(s) stopped, {} volume(s) stop when their pods leave",
                        a.stopped,
                        a.in_use
                    );
                }
            }
            Err(e) => tracing::warn!(dataset, "release: {e}"),
        }
    }
    Ok(())
}
