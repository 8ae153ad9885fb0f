//! The node's `fluid.v1.CacheNode` endpoint for the controller (`--cache-endpoint`). Each request
//! names a Dataset (`namespace/name`) and goes to the control socket of every volume of that
//! Dataset staged here, one `fluid-fuse` each: GetStats and Evict sum the answers, Warmup warms
//! every volume and streams the summed progress. The controller thereby sees one figure per
//! node and Dataset, however many PVCs of it are mounted here.

use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fluid_proto::Endpoint;
use fluid_proto::fluid::cache_node_client::CacheNodeClient;
use fluid_proto::fluid::cache_node_server::CacheNode;
use fluid_proto::fluid::{
    BlockChunk, EvictRequest, EvictResponse, GetStatsRequest, GetStatsResponse, ReadBlockRequest,
    ReleaseRequest, ReleaseResponse, WarmupProgress, WarmupRequest,
};
use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::error::{Error, Result};
use crate::supervisor::Supervisor;

/// How long a daemon gets to accept a connection, and to answer GetStats.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

type WarmupStream = Pin<Box<dyn Stream<Item = Result<WarmupProgress, Status>> + Send>>;
type BlockStream = Pin<Box<dyn Stream<Item = Result<BlockChunk, Status>> + Send>>;

pub struct CacheService {
    sup: Arc<Supervisor>,
    /// Flips to true at shutdown: open warm-up streams end then, so that the server's
    /// graceful shutdown does not wait for a long warm-up.
    shutdown: watch::Receiver<bool>,
    /// One connection per daemon for the other nodes' block reads (many, each small).
    block_channels: Mutex<HashMap<PathBuf, Channel>>,
}

impl CacheService {
    pub fn new(sup: Arc<Supervisor>, shutdown: watch::Receiver<bool>) -> Self {
        CacheService {
            sup,
            shutdown,
            block_channels: Mutex::default(),
        }
    }

    /// Passes another node's block read to a daemon of the Dataset (the first staged here: a
    /// node is one member of the Dataset's cache, however many volumes of it it mounts).
    async fn read_block(&self, req: ReadBlockRequest) -> Result<BlockStream> {
        let Some((id, socket)) = self.volumes(&req.dataset)?.into_iter().next() else {
            return Err(Error::Missing("dataset"));
        };
        let channel = {
            let mut channels = self
                .block_channels
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            match channels.get(&socket) {
                Some(c) => c.clone(),
                None => {
                    let c = Endpoint::Unix(socket.clone())
                        .lazy_channel(CALL_TIMEOUT)
                        .map_err(|e| Error::Unavailable(format!("volume {id}: {e}")))?;
                    channels.insert(socket.clone(), c.clone());
                    c
                }
            }
        };
        match CacheNodeClient::new(channel).read_block(req).await {
            Ok(answer) => Ok(Box::pin(answer.into_inner())),
            Err(s) => {
                // A daemon that was replaced has a new socket file: connect anew next time.
                if s.code() == tonic::Code::Unavailable {
                    self.block_channels
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&socket);
                }
                Err(Error::remote(&id, &s))
            }
        }
    }

    /// The volumes of `dataset` staged here: (volume id, control socket).
    fn volumes(&self, dataset: &str) -> Result<Vec<(String, PathBuf)>> {
        if dataset.is_empty() {
            return Err(Error::Missing("dataset"));
        }
        let volumes = self.sup.volumes_of(dataset);
        if volumes.is_empty() {
            return Err(Error::NotFound(format!(
                "no volume of dataset {dataset} is staged on node {}",
                self.sup.config().nodeid
            )));
        }
        Ok(volumes)
    }

    async fn stats(&self, dataset: &str) -> Result<GetStatsResponse> {
        let calls = self
            .volumes(dataset)?
            .into_iter()
            .map(|(id, socket)| async move {
                let mut client = connect(&id, socket).await?;
                tokio::time::timeout(CALL_TIMEOUT, client.get_stats(GetStatsRequest::default()))
                    .await
                    .map_err(|_| {
                        Error::Unavailable(format!(
                            "volume {id}: no cache stats within {CALL_TIMEOUT:?}"
                        ))
                    })?
                    .map(Response::into_inner)
                    .map_err(|s| Error::remote(&id, &s))
            });
        Ok(merge_stats(futures::future::try_join_all(calls).await?))
    }

    async fn evict(&self, req: EvictRequest) -> Result<EvictResponse> {
        let calls = self.volumes(&req.dataset)?.into_iter().map(|(id, socket)| {
            let forwarded = EvictRequest {
                paths: req.paths.clone(),
                dataset: String::new(),
            };
            async move {
                let mut client = connect(&id, socket).await?;
                client
                    .evict(forwarded)
                    .await
                    .map(Response::into_inner)
                    .map_err(|s| Error::remote(&id, &s))
            }
        });
        let answers = futures::future::try_join_all(calls).await?;
        Ok(EvictResponse {
            blocks_evicted: answers.iter().map(|a| a.blocks_evicted).sum(),
            bytes_freed: answers.iter().map(|a| a.bytes_freed).sum(),
        })
    }

    /// Starts the warm-up on every volume of the Dataset (a bad request fails here, with the
    /// daemon's code) and merges their progress streams into one.
    async fn warmup(&self, req: WarmupRequest) -> Result<WarmupStream> {
        let volumes = self.volumes(&req.dataset)?;
        tracing::info!(dataset = %req.dataset, volumes = volumes.len(), paths = ?req.paths, "warm-up requested");
        let calls = volumes.into_iter().map(|(id, socket)| {
            let forwarded = WarmupRequest {
                paths: req.paths.clone(),
                parallelism: req.parallelism,
                dataset: String::new(),
            };
            async move {
                let mut client = connect(&id, socket).await?;
                let stream = client
                    .warmup(forwarded)
                    .await
                    .map_err(|s| Error::remote(&id, &s))?
                    .into_inner();
                Ok::<_, Error>((id, stream))
            }
        });
        let streams = futures::future::try_join_all(calls).await?;
        let (tx, rx) = mpsc::channel(16);
        let mut shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let n = streams.len();
            let mut latest = vec![WarmupProgress::default(); n];
            let mut updates = futures::stream::select_all(
                streams
                    .into_iter()
                    .enumerate()
                    .map(|(i, (id, s))| s.map(move |item| (i, id.clone(), item))),
            );
            loop {
                let next = tokio::select! {
                    next = updates.next() => next,
                    // The guard wait_for returns must not live across an await.
                    _ = async { drop(shutdown.wait_for(|stop| *stop).await) } => {
                        let _ = tx
                            .send(Err(Status::unavailable("the node plugin is shutting down")))
                            .await;
                        return;
                    }
                };
                let Some((i, id, item)) = next else { return };
                let progress = match item {
                    Ok(p) => p,
                    Err(s) => {
                        let _ = tx.send(Err(Error::remote(&id, &s).into())).await;
                        return;
                    }
                };
                latest[i] = progress;
                // A closed channel means the caller went away: dropping the daemons' streams
                // stops their warm-ups too.
                if tx.send(Ok(merge_progress(&latest))).await.is_err() {
                    return;
                }
            }
        });
        Ok(Box::pin(ReceiverStream::new(rx)))
    }
}

async fn connect(volume: &str, socket: PathBuf) -> Result<CacheNodeClient<Channel>> {
    let channel = tokio::time::timeout(CALL_TIMEOUT, Endpoint::Unix(socket).connect())
        .await
        .map_err(|_| {
            Error::Unavailable(format!(
                "volume {volume}: fluid-fuse did not accept a connection within {CALL_TIMEOUT:?}"
            ))
        })?
        .map_err(|e| Error::Unavailable(format!("volume {volume}: {e}")))?;
    Ok(CacheNodeClient::new(channel))
}

/// The figures of several daemons as one: counters summed, tiers of the same medium and path
/// merged (each volume has its own MEM tier; disk tiers have a folder per volume, so they stay
/// apart), mount points listed once.
pub fn merge_stats(all: Vec<GetStatsResponse>) -> GetStatsResponse {
    let mut out = GetStatsResponse::default();
    for s in all {
        for t in s.tiers {
            match out
                .tiers
                .iter_mut()
                .find(|o| o.medium == t.medium && o.path == t.path)
            {
                Some(o) => {
                    o.used_bytes += t.used_bytes;
                    o.capacity_bytes += t.capacity_bytes;
                    o.blocks += t.blocks;
                    o.hits += t.hits;
                    o.evictions += t.evictions;
                }
                None => out.tiers.push(t),
            }
        }
        out.hits += s.hits;
        out.misses += s.misses;
        out.source_bytes_read += s.source_bytes_read;
        out.source_requests += s.source_requests;
        out.bytes_served += s.bytes_served;
        out.passthrough_opens += s.passthrough_opens;
        out.inodes += s.inodes;
        out.peer_hits += s.peer_hits;
        out.peer_bytes += s.peer_bytes;
        out.peer_errors += s.peer_errors;
        out.peer_corrupt += s.peer_corrupt;
        out.peer_served_blocks += s.peer_served_blocks;
        out.peer_served_bytes += s.peer_served_bytes;
        out.owned_bytes += s.owned_bytes;
        for m in s.members {
            if !out.members.contains(&m) {
                out.members.push(m);
            }
        }
        for m in s.mount_points {
            if !out.mount_points.contains(&m) {
                out.mount_points.push(m);
            }
        }
    }
    out
}

/// The progress of several warm-ups as one: sums, errors listed once, done when all are.
pub fn merge_progress(latest: &[WarmupProgress]) -> WarmupProgress {
    let mut out = WarmupProgress {
        done: !latest.is_empty(),
        ..Default::default()
    };
    for p in latest {
        out.files_total += p.files_total;
        out.files_done += p.files_done;
        out.bytes_total += p.bytes_total;
        out.bytes_done += p.bytes_done;
        out.bytes_already_cached += p.bytes_already_cached;
        out.quota_reached |= p.quota_reached;
        out.done &= p.done;
        for e in &p.errors {
            if !out.errors.contains(e) {
                out.errors.push(e.clone());
            }
        }
    }
    out
}

/// Logs a failed call (messages never hold secrets) and turns it into its status.
fn status<'a>(call: &'static str, dataset: &'a str) -> impl Fn(Error) -> Status + 'a {
    move |e| {
        match &e {
            Error::Missing(_) | Error::NotFound(_) | Error::Remote { .. } => {
                tracing::debug!(dataset, "cache endpoint {call}: {e}")
            }
            _ => tracing::warn!(dataset, "cache endpoint {call}: {e}"),
        }
        Status::from(e)
    }
}

#[tonic::async_trait]
impl CacheNode for CacheService {
    async fn get_stats(
        &self,
        request: Request<GetStatsRequest>,
    ) -> Result<Response<GetStatsResponse>, Status> {
        let dataset = request.into_inner().dataset;
        let stats = self
            .stats(&dataset)
            .await
            .map_err(status("GetStats", &dataset))?;
        Ok(Response::new(stats))
    }

    type WarmupStream = WarmupStream;

    async fn warmup(
        &self,
        request: Request<WarmupRequest>,
    ) -> Result<Response<WarmupStream>, Status> {
        let req = request.into_inner();
        let dataset = req.dataset.clone();
        let stream = self.warmup(req).await.map_err(status("Warmup", &dataset))?;
        Ok(Response::new(stream))
    }

    async fn evict(
        &self,
        request: Request<EvictRequest>,
    ) -> Result<Response<EvictResponse>, Status> {
        let req = request.into_inner();
        let dataset = req.dataset.clone();
        let answer = self.evict(req).await.map_err(status("Evict", &dataset))?;
        Ok(Response::new(answer))
    }

    type ReadBlockStream = BlockStream;

    async fn read_block(
        &self,
        request: Request<ReadBlockRequest>,
    ) -> Result<Response<BlockStream>, Status> {
        let req = request.into_inner();
        let dataset = req.dataset.clone();
        let stream = self
            .read_block(req)
            .await
            .map_err(status("ReadBlock", &dataset))?;
        Ok(Response::new(stream))
    }

    async fn release(
        &self,
        request: Request<ReleaseRequest>,
    ) -> Result<Response<ReleaseResponse>, Status> {
        let dataset = request.into_inner().dataset;
        if dataset.is_empty() {
            return Err(status("Release", &dataset)(Error::Missing("dataset")));
        }
        // Nothing of the Dataset here is not an error: the call is idempotent.
        let (stopped, in_use) = self
            .sup
            .release(&dataset)
            .await
            .map_err(status("Release", &dataset))?;
        Ok(Response::new(ReleaseResponse { stopped, in_use }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fluid_proto::fluid::{PathError, TierStats};

    fn tier(medium: &str, path: &str, used: u64, capacity: u64) -> TierStats {
        TierStats {
            medium: medium.into(),
            path: path.into(),
            used_bytes: used,
            capacity_bytes: capacity,
            blocks: 1,
            hits: 2,
            evictions: 3,
        }
    }

    #[test]
    fn stats_of_several_volumes_are_summed() {
        let a = GetStatsResponse {
            tiers: vec![tier("MEM", "", 10, 100), tier("SSD", "/c/pvc-a", 5, 50)],
            hits: 1,
            misses: 2,
            source_bytes_read: 3,
            source_requests: 4,
            bytes_served: 5,
            mount_points: vec!["s3://b".into()],
            passthrough_opens: 6,
            inodes: 7,
            ..Default::default()
        };
        let b = GetStatsResponse {
            tiers: vec![tier("MEM", "", 20, 100), tier("SSD", "/c/pvc-b", 7, 50)],
            mount_points: vec!["s3://b".into(), "s3://c".into()],
            ..a.clone()
        };
        let m = merge_stats(vec![a, b]);
        assert_eq!(m.tiers.len(), 3);
        assert_eq!(
            (m.tiers[0].used_bytes, m.tiers[0].capacity_bytes),
            (30, 200)
        );
        assert_eq!(
            (m.tiers[0].blocks, m.tiers[0].hits, m.tiers[0].evictions),
            (2, 4, 6)
        );
        assert_eq!(m.tiers[2].path, "/c/pvc-b");
        assert_eq!(
            (
                m.hits,
                m.misses,
                m.source_bytes_read,
                m.source_requests,
                m.bytes_served,
                m.passthrough_opens,
                m.inodes
            ),
            (2, 4, 6, 8, 10, 12, 14)
        );
        assert_eq!(m.mount_points, vec!["s3://b", "s3://c"]);
        assert_eq!(merge_stats(vec![]), GetStatsResponse::default());
    }

    #[test]
    fn warmup_progress_is_summed_and_done_when_all_are() {
        let err = PathError {
            path: "/x".into(),
            message: "no such file".into(),
        };
        let a = WarmupProgress {
            files_total: 2,
            files_done: 2,
            bytes_total: 10,
            bytes_done: 10,
            bytes_already_cached: 4,
            errors: vec![err.clone()],
            quota_reached: false,
            done: true,
        };
        let b = WarmupProgress {
            files_done: 1,
            bytes_done: 3,
            done: false,
            quota_reached: true,
            ..a.clone()
        };
        let m = merge_progress(&[a.clone(), b]);
        assert_eq!((m.files_total, m.files_done), (4, 3));
        assert_eq!(
            (m.bytes_total, m.bytes_done, m.bytes_already_cached),
            (20, 13, 8)
        );
        assert_eq!(m.errors, vec![err]);
        assert!(m.quota_reached && !m.done);
        assert!(merge_progress(&[a.clone(), a]).done);
    }
}
