//! A fetch in flight: the blocks one source request claimed ([`Run`]), each answered to the
//! readers waiting for it as it arrives and kept as [`Keep`] says, and the guard that takes a
//! claimed block out of the flight table however its fetch ends.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, oneshot};

use super::Inner;
use super::key::BlockKey;
use crate::error::{Error, Result};

/// Where a fetched block is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    /// In the memory tier and written to the first disk tier: a block this node owns.
    All,
    /// In the memory tier only, so hot blocks stay near their readers without filling the
    /// disk (a copy of a block another node owns).
    Memory,
    /// Nowhere: handed to the readers waiting for it and dropped.
    Nothing,
}

/// Blocks claimed for one fetch ([`BlockCache::claim_runs`]), in order. Each is answered by
/// [`Run::deliver`] as it arrives; any left when the run is dropped fail.
pub struct Run {
    pub(super) inner: Arc<Inner>,
    pub(super) pending: VecDeque<Claimed>,
    pub(super) keep: Keep,
}

pub(super) struct Claimed {
    pub(super) guard: FlightGuard,
    pub(super) tx: oneshot::Sender<Result<Bytes>>,
    /// Its place in the disk write queue, once reserved.
    pub(super) slot: Option<OwnedSemaphorePermit>,
}

impl Run {
    /// Blocks not delivered yet.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Keeps the blocks of this run as `keep` says (by default: [`Keep::All`]).
    pub fn set_keep(&mut self, keep: Keep) {
        self.keep = keep;
    }

    /// The blocks after the first `at`, as a run of their own (kept the same way).
    pub fn split_off(&mut self, at: usize) -> Run {
        Run {
            inner: self.inner.clone(),
            pending: self.pending.split_off(at.min(self.pending.len())),
            keep: self.keep,
        }
    }

    /// Waits for a place in the disk write queue for each block (see the module notes), so
    /// the fetch goes no faster than the disk keeps up. Blocks not kept on disk need none.
    pub async fn reserve_writes(&mut self) {
        if self.keep != Keep::All {
            return;
        }
        for c in &mut self.pending {
            c.slot = self.inner.write_slot(&c.guard.key).await;
        }
    }

    /// Answers the next block: kept in the cache when it is data, handed to its readers.
    pub fn deliver(&mut self, result: Result<Bytes>) {
        let Some(c) = self.pending.pop_front() else {
            return;
        };
        if let Ok(data) = &result {
            match self.keep {
                Keep::All => self.inner.keep(&c.guard.key, data, c.slot),
                Keep::Memory => self.inner.keep(&c.guard.key, data, None),
                Keep::Nothing => {}
            }
        }
        // Out of the flight table first: a caller coming after an error starts anew.
        drop(c.guard);
        let _ = c.tx.send(result);
    }

    /// Answers every block not delivered yet with `err`.
    pub fn fail(mut self, err: Error) {
        while !self.pending.is_empty() {
            self.deliver(Err(err.clone()));
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        while !self.pending.is_empty() {
            self.deliver(Err(Error::unavailable(
                "block cache",
                "the fetch of a block was abandoned",
            )));
        }
    }
}

/// Removes its fetch from the flight table however the fetch ends (a panic included), unless
/// a newer fetch of the key took its place.
pub(super) struct FlightGuard {
    pub(super) inner: Arc<Inner>,
    pub(super) key: BlockKey,
    pub(super) id: u64,
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        let mut flights = self.inner.flights();
        if flights.get(&self.key).is_some_and(|f| f.id == self.id) {
            flights.remove(&self.key);
        }
    }
}
