//! This node's view of the Dataset's cache cluster, for the read path: which member owns a
//! block now, and reading a block from its owner within bounds. A peer that does not answer
//! in time, answers an error or sends bytes that fail their checksum is skipped for a back-off
//! period (its blocks go to the next member in rendezvous order, or to the source when that
//! is this node), so a peer can slow one block by at most the timeout and never fails a read.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fluid_proto::Endpoint;
use fluid_proto::cache_auth::{BearerToken, NodeClient};
use fluid_proto::fluid::ReadBlockRequest;

use super::membership::Membership;
use super::owner::Member;
use super::wire::{self, Bad};
use crate::cache::BlockKey;
use crate::histogram::Histogram;
use crate::lock;
use fluid_source::BlockBuf;

/// The first back-off after a failure; it doubles while the peer keeps failing.
const BACKOFF_FIRST: Duration = Duration::from_secs(2);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// However often a peer says it is still fetching, a block takes no longer than this from it.
const LONGEST_TRANSFER: Duration = Duration::from_secs(60);

/// How this node reaches the others; see the module doc.
pub struct Settings {
    /// This node's member name.
    pub me: String,
    /// `namespace/name`, sent with every request for a node plugin to route by.
    pub dataset: String,
    /// A peer that sends nothing for this long is skipped.
    pub timeout: Duration,
    pub token: BearerToken,
}

pub struct Cluster {
    settings: Settings,
    membership: Arc<Membership>,
    peers: Mutex<HashMap<String, Arc<Peer>>>,
    pub counters: ClusterCounters,
}

/// What this node got from, and gave to, the others.
#[derive(Default)]
pub struct ClusterCounters {
    /// Blocks read from their owner, and their bytes.
    pub peer_hits: AtomicU64,
    pub peer_bytes: AtomicU64,
    /// Peer reads that failed and went elsewhere; of them, blocks that failed their checksum.
    pub peer_errors: AtomicU64,
    pub peer_corrupt: AtomicU64,
    /// Blocks (and bytes) this node served to the others as their owner.
    pub served_blocks: AtomicU64,
    pub served_bytes: AtomicU64,
}

/// Who gets a block.
pub enum Owner {
    /// This node: its cache, else the source.
    Me,
    Peer(Arc<Peer>),
}

/// Another member, as this node talks to it.
pub struct Peer {
    pub name: String,
    pub endpoint: String,
    client: Mutex<Option<NodeClient>>,
    health: Mutex<Health>,
    pub stats: PeerStats,
}

#[derive(Default)]
struct Health {
    failures: u32,
    down_until: Option<Instant>,
}

/// Per-peer figures, for the metrics.
#[derive(Default)]
pub struct PeerStats {
    pub requests: AtomicU64,
    pub bytes: AtomicU64,
    pub errors: AtomicU64,
    pub corrupt: AtomicU64,
    pub latency: Histogram,
}

/// Why a block did not come from a peer.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Endpoint(String),
    #[error("it answered {code:?}: {message}")]
    Status { code: tonic::Code, message: String },
    #[error("{0}")]
    Bad(#[from] Bad),
}

impl From<tonic::Status> for PeerError {
    fn from(s: tonic::Status) -> Self {
        PeerError::Status {
            code: s.code(),
            message: s.message().to_string(),
        }
    }
}

impl Cluster {
    pub fn new(settings: Settings, membership: Arc<Membership>) -> Self {
        Cluster {
            settings,
            membership,
            peers: Mutex::default(),
            counters: ClusterCounters::default(),
        }
    }

    pub fn me(&self) -> &str {
        &self.settings.me
    }

    pub fn dataset(&self) -> &str {
        &self.settings.dataset
    }

    /// The member names, this node's among them when the membership lists it.
    pub fn members(&self) -> Vec<String> {
        self.membership
            .owners()
            .members()
            .map(|m| m.name.clone())
            .collect()
    }

    /// Whether this node owns `key` by the members as they are, ignoring back-offs: what its
    /// share of the cluster's cache is counted by.
    pub fn owns(&self, key: &BlockKey) -> bool {
        let owners = self.membership.owners();
        owners.owner(key).is_none_or(|m| m.name == self.settings.me)
    }

    /// Who gets `key` now: the first member in rendezvous order that is this node or a peer
    /// not backed off; this node when every peer before it is.
    pub fn owner(&self, key: &BlockKey) -> Owner {
        let owners = self.membership.owners();
        for m in owners.ranked(key) {
            if m.name == self.settings.me {
                return Owner::Me;
            }
            let peer = self.peer(m);
            if peer.available() {
                return Owner::Peer(peer);
            }
        }
        Owner::Me
    }

    /// The peer for member `m`, made at first sight (and anew when its endpoint changed).
    fn peer(&self, m: &Member) -> Arc<Peer> {
        let mut peers = lock(&self.peers);
        if let Some(p) = peers.get(&m.name).filter(|p| p.endpoint == m.endpoint) {
            return p.clone();
        }
        let p = Arc::new(Peer {
            name: m.name.clone(),
            endpoint: m.endpoint.clone(),
            client: Mutex::default(),
            health: Mutex::default(),
            stats: PeerStats::default(),
        });
        peers.insert(m.name.clone(), p.clone());
        p
    }

    /// Every peer talked to so far, by name.
    pub fn peers(&self) -> Vec<Arc<Peer>> {
        let mut all: Vec<_> = lock(&self.peers).values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// The request for a block, with this node's Dataset.
    pub fn request(
        &self,
        mount: &str,
        path: &str,
        meta: &fluid_source::Meta,
        index: u64,
        block_size: u64,
    ) -> ReadBlockRequest {
        wire::request(&self.settings.dataset, mount, path, meta, index, block_size)
    }

    /// Reads a block from `peer` into `buf` (which must be as long as the block). On an error
    /// the peer is backed off, the error counted and logged when the back-off starts; `buf`
    /// may hold part of the block then.
    pub async fn read(
        &self,
        peer: &Peer,
        req: ReadBlockRequest,
        buf: &mut BlockBuf,
    ) -> Result<(), PeerError> {
        let started = Instant::now();
        peer.stats.requests.fetch_add(1, Ordering::Relaxed);
        let result = tokio::time::timeout(LONGEST_TRANSFER, self.transfer(peer, req, buf))
            .await
            .unwrap_or(Err(PeerError::Timeout(LONGEST_TRANSFER)));
        peer.stats.latency.observe(started.elapsed());
        let c = &self.counters;
        match &result {
            Ok(()) => {
                let n = buf.filled() as u64;
                peer.stats.bytes.fetch_add(n, Ordering::Relaxed);
                c.peer_hits.fetch_add(1, Ordering::Relaxed);
                c.peer_bytes.fetch_add(n, Ordering::Relaxed);
                peer.succeeded();
            }
            Err(e) => {
                peer.stats.errors.fetch_add(1, Ordering::Relaxed);
                c.peer_errors.fetch_add(1, Ordering::Relaxed);
                if matches!(e, PeerError::Bad(Bad::Checksum)) {
                    peer.stats.corrupt.fetch_add(1, Ordering::Relaxed);
                    c.peer_corrupt.fetch_add(1, Ordering::Relaxed);
                }
                // The object changed at the source: the peer is fine, the reader learns it
                // from the source.
                let changed = matches!(
                    e,
                    PeerError::Status {
                        code: tonic::Code::Aborted,
                        ..
                    }
                );
                if !changed && let Some(wait) = peer.failed() {
                    tracing::warn!(
                        peer = %peer.name,
                        endpoint = %peer.endpoint,
                        "peer read failed: {e}; its blocks go to the next owner or the source for {}",
                        humantime::format_duration(wait)
                    );
                }
            }
        }
        result
    }

    async fn transfer(
        &self,
        peer: &Peer,
        req: ReadBlockRequest,
        buf: &mut BlockBuf,
    ) -> Result<(), PeerError> {
        let t = self.settings.timeout;
        let mut client = peer.client(&self.settings.token, t)?;
        let mut stream = tokio::time::timeout(t, client.read_block(req))
            .await
            .map_err(|_| PeerError::Timeout(t))??
            .into_inner();
        loop {
            let next = tokio::time::timeout(t, stream.message())
                .await
                .map_err(|_| PeerError::Timeout(t))??;
            let Some(chunk) = next else { break };
            if chunk.data.is_empty() {
                continue; // still fetching
            }
            wire::append(buf, &chunk)?;
        }
        wire::complete(buf)?;
        Ok(())
    }
}

impl Peer {
    fn available(&self) -> bool {
        let h = lock(&self.health);
        h.down_until.is_none_or(|t| Instant::now() >= t)
    }

    fn succeeded(&self) {
        let mut h = lock(&self.health);
        if h.failures > 0 {
            tracing::info!(peer = %self.name, "peer answers again");
        }
        *h = Health::default();
    }

    /// Backs the peer off; the wait when this starts a back-off (not while one runs).
    fn failed(&self) -> Option<Duration> {
        let mut h = lock(&self.health);
        let now = Instant::now();
        if h.down_until.is_some_and(|t| now < t) {
            return None;
        }
        let wait = BACKOFF_FIRST
            .saturating_mul(1 << h.failures.min(8))
            .min(BACKOFF_MAX);
        h.failures += 1;
        h.down_until = Some(now + wait);
        // A broken connection is made anew at the next try.
        *lock(&self.client) = None;
        Some(wait)
    }

    fn client(&self, token: &BearerToken, connect: Duration) -> Result<NodeClient, PeerError> {
        let mut c = lock(&self.client);
        if let Some(client) = c.as_ref() {
            return Ok(client.clone());
        }
        let ep: Endpoint = self
            .endpoint
            .parse()
            .map_err(|e: fluid_proto::EndpointError| PeerError::Endpoint(e.to_string()))?;
        let channel = ep
            .lazy_channel(connect)
            .map_err(|e| PeerError::Endpoint(e.to_string()))?;
        let client = token.client(channel);
        *c = Some(client.clone());
        Ok(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str) -> Member {
        Member {
            name: name.into(),
            endpoint: format!("tcp://127.0.0.1:{}", 1 + name.len()),
        }
    }

    fn cluster(me: &str, names: &[&str]) -> Cluster {
        Cluster::new(
            Settings {
                me: me.into(),
                dataset: "ns/d".into(),
                timeout: Duration::from_millis(300),
                token: BearerToken::default(),
            },
            Arc::new(Membership::fixed(names.iter().map(|n| member(n)).collect())),
        )
    }

    fn owner_name(c: &Cluster, k: &BlockKey) -> String {
        match c.owner(k) {
            Owner::Me => c.me().to_string(),
            Owner::Peer(p) => p.name.clone(),
        }
    }

    #[test]
    fn a_backed_off_peer_hands_its_blocks_to_the_next_member() {
        let a = cluster("a", &["a", "b", "c"]);
        let keys: Vec<_> = (0..300).map(|i| BlockKey::new("s3:x", i)).collect();
        let before: Vec<_> = keys.iter().map(|k| owner_name(&a, k)).collect();
        assert!(before.iter().any(|o| o == "b") && before.iter().any(|o| o == "a"));
        let b = a.peer(&member("b"));
        assert_eq!(b.failed(), Some(BACKOFF_FIRST));
        assert_eq!(b.failed(), None, "one back-off at a time");
        for (k, was) in keys.iter().zip(&before) {
            let now = owner_name(&a, k);
            if was == "b" {
                assert_ne!(now, "b");
            } else {
                assert_eq!(&now, was, "only b's blocks move");
            }
            assert_eq!(a.owns(k), was == "a", "ownership ignores back-offs");
        }
        b.succeeded();
        let again: Vec<_> = keys.iter().map(|k| owner_name(&a, k)).collect();
        assert_eq!(again, before, "b rejoins");
        // Failing again and again, the wait doubles up to its bound.
        let mut waits = Vec::new();
        for _ in 0..8 {
            lock(&b.health).down_until = None;
            waits.extend(b.failed());
        }
        assert_eq!(waits[1], 2 * BACKOFF_FIRST);
        assert_eq!(*waits.last().unwrap(), BACKOFF_MAX);
    }

    #[tokio::test]
    async fn an_unreachable_peer_fails_within_the_timeout_and_is_backed_off() {
        // A port bound and never listened on, held for the whole test: connections to it are
        // refused, and (bound without SO_REUSEADDR) no other socket can take it meanwhile.
        let held = tokio::net::TcpSocket::new_v4().unwrap();
        held.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = held.local_addr().unwrap().port();
        let c = Cluster::new(
            Settings {
                me: "a".into(),
                dataset: String::new(),
                timeout: Duration::from_millis(500),
                token: BearerToken::default(),
            },
            Arc::new(Membership::fixed(vec![Member {
                name: "b".into(),
                endpoint: format!("tcp://127.0.0.1:{port}"),
            }])),
        );
        let key = BlockKey::new("s3:x", 0);
        let Owner::Peer(p) = c.owner(&key) else {
            panic!("b owns everything")
        };
        let meta = fluid_source::Meta::dir(std::time::SystemTime::UNIX_EPOCH);
        let mut buf = BlockBuf::new(10);
        let started = Instant::now();
        let err = c
            .read(&p, c.request("s3://x", "f", &meta, 0, 10), &mut buf)
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5), "{err}");
        assert_eq!(c.counters.peer_errors.load(Ordering::Relaxed), 1);
        assert!(matches!(c.owner(&key), Owner::Me), "backed off: {err}");
    }
}
