//! The `CacheNode` gRPC service of one daemon: cache figures, warm-up and eviction. A daemon
//! serves one volume, so the requests' `dataset` field (which the node plugin routes by) is
//! ignored here.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use fluid_proto::fluid::cache_node_server::CacheNode;
use fluid_proto::fluid::{
    BlockChunk, EvictRequest, EvictResponse, GetStatsRequest, GetStatsResponse, PathError,
    ReadBlockRequest, ReleaseRequest, ReleaseResponse, TierStats, WarmupProgress, WarmupRequest,
};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::cache::{BlockKey, ObjectScope};
use crate::error::{Error, Result};
use crate::namespace::{Location, Node};
use crate::peers::cluster::ClusterCounters;
use crate::peers::wire;
use crate::reader::{OpenFile, Reader};
use fluid_source::{self as source, Kind};

const DEFAULT_WARMUP_PARALLELISM: usize = 8;

/// While the owner fetches a block from the source, it tells the asking node so this often,
/// so that a slow source is not taken for a dead peer.
const STILL_FETCHING_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Cheap to clone: every field is shared.
#[derive(Clone)]
pub struct Control {
    pub reader: Arc<Reader>,
}

impl Control {
    pub fn stats(&self) -> GetStatsResponse {
        let s = self.reader.cache.stats();
        let c = &self.reader.counters;
        let cluster = self.reader.cluster.as_deref();
        let peer = |f: fn(&ClusterCounters) -> &AtomicU64| {
            cluster.map_or(0, |c| f(&c.counters).load(Ordering::Relaxed))
        };
        let owned_bytes = match cluster {
            Some(c) => self.reader.cache.distinct_bytes(|k| c.owns(k)),
            None => self.reader.cache.distinct_bytes(|_| true),
        };
        GetStatsResponse {
            peer_hits: peer(|c| &c.peer_hits),
            peer_bytes: peer(|c| &c.peer_bytes),
            peer_errors: peer(|c| &c.peer_errors),
            peer_corrupt: peer(|c| &c.peer_corrupt),
            peer_served_blocks: peer(|c| &c.served_blocks),
            peer_served_bytes: peer(|c| &c.served_bytes),
            members: cluster.map(|c| c.members()).unwrap_or_default(),
            owned_bytes,
            tiers: s
                .tiers
                .iter()
                .map(|t| TierStats {
                    medium: t.medium.to_string(),
                    path: t.path.clone(),
                    used_bytes: t.used_bytes,
                    capacity_bytes: t.capacity_bytes,
                    blocks: t.blocks,
                    hits: t.hits,
                    evictions: t.evictions,
                })
                .collect(),
            hits: s.hits,
            misses: s.misses,
            source_bytes_read: c.bytes.load(Ordering::Relaxed),
            source_requests: c.requests.load(Ordering::Relaxed),
            bytes_served: c.bytes_served.load(Ordering::Relaxed),
            passthrough_opens: c.passthrough_opens.load(Ordering::Relaxed),
            inodes: self.reader.ns.node_count() as u64,
            mount_points: self
                .reader
                .ns
                .mounts()
                .map(|m| m.mount_point.url.clone())
                .collect(),
        }
    }

    /// Every file under the given dataset paths, walking directories.
    async fn files_under(
        &self,
        paths: &[String],
        errors: &mut Vec<PathError>,
    ) -> Vec<(String, Node)> {
        let ns = &self.reader.ns;
        let mut out = Vec::new();
        let mut queue: VecDeque<(String, Node)> = VecDeque::new();
        for p in paths {
            match ns.resolve_path(p).await {
                Ok(node) => queue.push_back((p.clone(), node)),
                Err(e) => errors.push(PathError {
                    path: p.clone(),
                    message: e.to_string(),
                }),
            }
        }
        while let Some((path, node)) = queue.pop_front() {
            if node.meta.kind == Kind::File {
                out.push((path, node));
                continue;
            }
            let listed = async {
                let mut stream = ns.open_dir(node.ino)?;
                let mut i = 0;
                while ns.fill(&mut stream, i).await? {
                    i += 1;
                }
                Ok::<_, Error>(stream.entries)
            };
            match listed.await {
                Ok(entries) => {
                    for (name, ino) in entries {
                        if let Ok(child) = ns.node(ino) {
                            queue.push_back((
                                format!("{}/{name}", path.trim_end_matches('/')),
                                child,
                            ));
                        }
                    }
                }
                Err(e) => errors.push(PathError {
                    path,
                    message: e.to_string(),
                }),
            }
        }
        out
    }

    /// Warms the blocks of a file this node owns (all of them unless the cache is shared:
    /// then every block is warmed once in the cluster, on its owner); their bytes, and of
    /// those the bytes that were cached already.
    async fn warm_file(reader: &Reader, file: &OpenFile) -> Result<(u64, u64)> {
        let (mut bytes, mut cached) = (0, 0);
        for (index, len) in reader.owned_blocks(file) {
            if reader.cache.contains(&BlockKey {
                object: file_object(file),
                index,
            }) {
                cached += len;
            }
            reader.owned_block(file, index).await?;
            bytes += len;
        }
        Ok((bytes, cached))
    }
}

fn file_object(file: &crate::reader::OpenFile) -> Arc<str> {
    file.object().clone()
}

type WarmupStream = Pin<Box<dyn Stream<Item = Result<WarmupProgress, Status>> + Send>>;
type BlockStream = Pin<Box<dyn Stream<Item = Result<BlockChunk, Status>> + Send>>;

impl Control {
    /// The object version and block a peer asks for, checked against what this node serves.
    fn asked_block(&self, req: &ReadBlockRequest) -> Result<(OpenFile, u64), Status> {
        let bs = self.reader.cfg.block_size;
        if req.block_size != bs {
            return Err(Status::failed_precondition(format!(
                "block_size: this node cuts {bs}-byte blocks, the request names {}-byte ones; give every node of the Dataset the same block size",
                req.block_size
            )));
        }
        let src = self.reader.ns.source_named(&req.mount).ok_or_else(|| {
            Status::not_found(format!("mount: this node serves no mount {:?}", req.mount))
        })?;
        source::check_relative(&req.path).map_err(crate::Error::from)?;
        if req.index.saturating_mul(bs) >= req.size {
            return Err(Status::out_of_range(format!(
                "index: block {} starts past the end of the {}-byte object",
                req.index, req.size
            )));
        }
        let file = Reader::open_version(0, src.clone(), req.path.clone(), wire::meta_of(req));
        Ok((file, req.index))
    }
}

#[tonic::async_trait]
impl CacheNode for Control {
    async fn get_stats(
        &self,
        _: Request<GetStatsRequest>,
    ) -> Result<Response<GetStatsResponse>, Status> {
        Ok(Response::new(self.stats()))
    }

    type WarmupStream = WarmupStream;

    async fn warmup(&self, req: Request<WarmupRequest>) -> Result<Response<WarmupStream>, Status> {
        let req = req.into_inner();
        if req.paths.is_empty() {
            return Err(Status::invalid_argument(
                "paths: give at least one dataset path, e.g. /",
            ));
        }
        let parallelism = match req.parallelism {
            0 => DEFAULT_WARMUP_PARALLELISM,
            n => n as usize,
        };
        let (tx, rx) = mpsc::channel(16);
        let this = self.clone();
        tokio::spawn(async move {
            let mut progress = WarmupProgress::default();
            let reader = this.reader.clone();
            let mut files = Vec::new();
            for (path, node) in this.files_under(&req.paths, &mut progress.errors).await {
                match reader.open(&node) {
                    Ok(file) => {
                        // In a shared cache, the bytes of the blocks this node owns; a file
                        // without one is done here at once (its owners warm it), so that every
                        // member counts every file of the copy they make together.
                        let share: u64 = reader.owned_blocks(&file).map(|(_, len)| len).sum();
                        files.push((path, file, share));
                    }
                    Err(e) => progress.errors.push(PathError {
                        path,
                        message: e.to_string(),
                    }),
                }
            }
            progress.files_total = files.len() as u64;
            progress.bytes_total = files.iter().map(|(_, _, share)| share).sum();
            if tx.send(Ok(progress.clone())).await.is_err() {
                return;
            }
            let room = Arc::new(Room::new(this.room()));
            let mut results =
                futures::stream::iter(files.into_iter().map(|(path, file, share)| {
                    let (reader, room) = (reader.clone(), room.clone());
                    async move {
                        // Files read in parallel are admitted against the room left, so that
                        // together they never push out what this warm-up already loaded.
                        if !room.take(share) {
                            return (path, None);
                        }
                        (path, Some(Control::warm_file(&reader, &file).await))
                    }
                }))
                .buffer_unordered(parallelism);
            while let Some((path, result)) = results.next().await {
                match result {
                    Some(Ok((bytes, cached))) => {
                        progress.files_done += 1;
                        progress.bytes_done += bytes;
                        progress.bytes_already_cached += cached;
                    }
                    Some(Err(e)) => progress.errors.push(PathError {
                        path,
                        message: e.to_string(),
                    }),
                    None => progress.quota_reached = true,
                }
                if this.cache_full() {
                    progress.quota_reached = true;
                    break;
                }
                if tx.send(Ok(progress.clone())).await.is_err() {
                    return;
                }
            }
            progress.done = true;
            let _ = tx.send(Ok(progress)).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn evict(&self, req: Request<EvictRequest>) -> Result<Response<EvictResponse>, Status> {
        let req = req.into_inner();
        if req.paths.is_empty() {
            return Err(Status::invalid_argument(
                "paths: give at least one dataset path, e.g. /",
            ));
        }
        let mut resp = EvictResponse::default();
        for p in &req.paths {
            let node = self.reader.ns.resolve_path(p).await.map_err(Status::from)?;
            let ns = &self.reader.ns;
            let scopes: Vec<ObjectScope> = match &node.location {
                Location::InMount { mount, path } => {
                    let url = ns.source(*mount).map(|s| s.name()).unwrap_or_default();
                    if node.meta.kind == Kind::File {
                        vec![ObjectScope::File { mount: url, path }]
                    } else {
                        vec![ObjectScope::Dir { mount: url, path }]
                    }
                }
                Location::Virtual => ns
                    .mounts()
                    .filter(|m| m.path.starts_with(p.trim_end_matches('/')))
                    .map(|m| ObjectScope::Mount(&m.mount_point.url))
                    .collect(),
            };
            for scope in scopes {
                let (blocks, bytes) = self.reader.cache.evict(scope).await;
                resp.blocks_evicted += blocks;
                resp.bytes_freed += bytes;
            }
        }
        Ok(Response::new(resp))
    }

    type ReadBlockStream = BlockStream;

    /// A block for another node: from the cache, else from the source (kept here, as the
    /// owner keeps its blocks), in checked chunks.
    async fn read_block(
        &self,
        req: Request<ReadBlockRequest>,
    ) -> Result<Response<BlockStream>, Status> {
        let (file, index) = self.asked_block(&req.into_inner())?;
        let (tx, rx) = mpsc::channel(4);
        let reader = self.reader.clone();
        tokio::spawn(async move {
            // The fetch itself runs in the cache's own task: an asker that gives up does not
            // stop it, and the next asker finds the block.
            let fetch = reader.owned_block(&file, index);
            tokio::pin!(fetch);
            let block = loop {
                tokio::select! {
                    block = &mut fetch => break block,
                    _ = tokio::time::sleep(STILL_FETCHING_EVERY) => {
                        if tx.send(Ok(wire::still_fetching())).await.is_err() {
                            return;
                        }
                    }
                }
            };
            match block {
                Ok(block) => {
                    let c = reader.cluster.as_ref().map(|c| &c.counters);
                    for chunk in wire::chunks(&block) {
                        if tx.send(Ok(chunk)).await.is_err() {
                            return;
                        }
                    }
                    if let Some(c) = c {
                        c.served_blocks.fetch_add(1, Ordering::Relaxed);
                        c.served_bytes
                            .fetch_add(block.len() as u64, Ordering::Relaxed);
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(Status::from(e))).await;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn release(
        &self,
        _: Request<ReleaseRequest>,
    ) -> Result<Response<ReleaseResponse>, Status> {
        Err(Status::unimplemented(
            "a fluid-fuse daemon serves one volume and is stopped by its node plugin; send Release to the node plugin's cache endpoint",
        ))
    }
}

/// Warm-up fills the cache up to this share of its capacity, rather than evicting what it
/// just loaded.
const WARMUP_FILL: f64 = 0.95;

impl Control {
    fn cache_full(&self) -> bool {
        self.room() == Some(0)
    }

    /// Bytes a warm-up may still load; `None` when the cache has no quota.
    fn room(&self) -> Option<u64> {
        let cap = self.reader.cache.capacity();
        let limit = (cap as f64 * WARMUP_FILL) as u64;
        (cap > 0).then(|| limit.saturating_sub(self.reader.cache.used()))
    }
}

/// The room a warm-up has left, shared by the files it reads at once. A file that does not fit
/// is skipped; smaller ones after it may still fit.
struct Room {
    left: Option<std::sync::Mutex<u64>>,
}

impl Room {
    fn new(left: Option<u64>) -> Room {
        Room {
            left: left.map(std::sync::Mutex::new),
        }
    }

    /// Takes `bytes` of the room; false when they do not fit.
    fn take(&self, bytes: u64) -> bool {
        let Some(left) = &self.left else { return true };
        let mut left = left.lock().unwrap_or_else(|e| e.into_inner());
        if bytes > *left {
            return false;
        }
        *left -= bytes;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::Room;

    #[test]
    fn room_admits_what_fits() {
        let room = Room::new(Some(2918));
        assert!(room.take(1000));
        assert!(!room.take(2000), "1918 left");
        assert!(room.take(1918));
        assert!(!room.take(1));
        let unlimited = Room::new(None);
        assert!(unlimited.take(u64::MAX));
    }
}
