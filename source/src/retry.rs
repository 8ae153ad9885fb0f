//! Bounded retries around any source. Every call is cut off after `attempt_timeout` and tried
//! at most `attempts` times, so a dead store fails a FUSE request within a known time instead
//! of hanging it; only errors that may pass ([`Error::is_retryable`]) are tried again.

use std::collections::VecDeque;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::BlockBuf;
use crate::{Error, Result};
use crate::{Meta, Page, Source};

/// How often and how long a call is tried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Tries in all, the first included; at least one is always made.
    pub attempts: u32,
    /// Wait before the second try; doubles after each failure.
    pub first_backoff: Duration,
    /// Upper bound of one wait.
    pub max_backoff: Duration,
    /// One try longer than this is abandoned and counts as [`Error::Unavailable`].
    pub attempt_timeout: Duration,
}

impl Default for Policy {
    /// 3 tries of at most 15 s with waits of about 0.1 and 0.2 s: a store that never answers
    /// fails a call after about 45 s, under the minute a reader will wait. The time per try is
    /// what keeps slow but working links usable (16 parallel 4 MiB block reads over 50 Mbit/s
    /// take about 11 s each); transient failures are also retried inside each try by the S3
    /// SDK (2 tries) and by hdfs-native (NameNode failover), so a third try here is enough.
    fn default() -> Self {
        Policy {
            attempts: 3,
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            attempt_timeout: Duration::from_secs(15),
        }
    }
}

impl Policy {
    /// The wait after failed try number `failed` (1-based) before jitter: doubling, capped.
    fn full_backoff(&self, failed: u32) -> Duration {
        let factor = 1u32
            .checked_shl(failed.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.first_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }

    /// The wait after failed try number `failed`, with "equal jitter" (half fixed, half
    /// random) so readers that failed together do not retry in step.
    fn backoff(&self, failed: u32) -> Duration {
        let half = self.full_backoff(failed) / 2;
        half + half.mul_f64(random_fraction())
    }

    /// The longest a call can take under this policy, jitter included.
    pub fn worst_case(&self) -> Duration {
        let attempts = self.attempts.max(1);
        let waits: Duration = (1..attempts).map(|n| self.full_backoff(n)).sum();
        self.attempt_timeout.saturating_mul(attempts) + waits
    }
}

/// A number in [0, 1) that differs between calls; std's hasher keys are randomly seeded, which
/// is all the randomness jitter needs (no dependency on a random number crate).
fn random_fraction() -> f64 {
    let bits = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// A source whose calls are retried under a [`Policy`].
pub struct Retrying {
    inner: Arc<dyn Source>,
    policy: Policy,
}

impl Retrying {
    pub fn new(inner: Arc<dyn Source>, policy: Policy) -> Self {
        Retrying { inner, policy }
    }

    /// Runs `call` until it succeeds, fails for good, or the tries are spent. `what` names the
    /// operation and path in logs (never credentials: sources keep those out of errors).
    async fn run<T, F, Fut>(&self, what: &str, mut call: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let attempts = self.policy.attempts.max(1);
        let mut tried = 0;
        loop {
            tried += 1;
            let err = match tokio::time::timeout(self.policy.attempt_timeout, call()).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => e,
                Err(_) => Error::unavailable(
                    self.inner.name(),
                    format!("{what}: no answer within {:?}", self.policy.attempt_timeout),
                ),
            };
            if !err.is_retryable() || tried >= attempts {
                return Err(err);
            }
            let wait = self.policy.backoff(tried);
            tracing::warn!(source = self.inner.name(), %err, attempt = tried, of = attempts, ?wait, "{what} failed; retrying");
            tokio::time::sleep(wait).await;
        }
    }
}

#[async_trait]
impl Source for Retrying {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn check(&self) -> Result<()> {
        self.run("check", || self.inner.check()).await
    }

    async fn stat(&self, path: &str) -> Result<Option<Meta>> {
        self.run(&format!("stat {path:?}"), || self.inner.stat(path))
            .await
    }

    async fn list(&self, dir: &str, token: Option<String>) -> Result<Page> {
        self.run(&format!("list {dir:?}"), || {
            self.inner.list(dir, token.clone())
        })
        .await
    }

    async fn read_run(
        &self,
        path: &str,
        meta: &Meta,
        offset: u64,
        bufs: &mut VecDeque<BlockBuf>,
        done: &mut (dyn FnMut(BlockBuf) + Send),
    ) -> Result<()> {
        // A try resumes after the buffers handed over by the tries before it.
        let state = tokio::sync::Mutex::new((bufs, offset, done));
        let what = format!("read {path:?} from {offset}");
        self.run(&what, || async {
            let mut st = state.lock().await;
            let (bufs, at, done) = &mut *st;
            if let Some(front) = bufs.front_mut() {
                front.clear();
            }
            let from = *at;
            self.inner
                .read_run(path, meta, from, bufs, &mut |b: BlockBuf| {
                    *at += b.capacity() as u64;
                    done(b)
                })
                .await
        })
        .await
    }

    async fn read_into(
        &self,
        path: &str,
        meta: &Meta,
        offset: u64,
        buf: &mut BlockBuf,
    ) -> Result<()> {
        // Each try borrows the buffer in turn (a timed-out try is dropped before the next).
        let buf = tokio::sync::Mutex::new(buf);
        let what = format!("read {path:?} at {offset}");
        self.run(&what, || async {
            let mut buf = buf.lock().await;
            self.inner.read_into(path, meta, offset, &mut buf).await
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::{Instant, SystemTime};

    use super::*;
    use crate::Kind;

    /// What the fake does on one call.
    enum Step {
        Fail(Error),
        Hang,
        Succeed,
    }

    /// A source that plays a script of outcomes, one per call, and counts the calls.
    struct Scripted {
        steps: Mutex<VecDeque<Step>>,
        calls: AtomicU32,
    }

    impl Scripted {
        fn new(steps: Vec<Step>) -> Arc<Self> {
            Arc::new(Scripted {
                steps: Mutex::new(steps.into()),
                calls: AtomicU32::new(0),
            })
        }

        async fn next(&self) -> Result<()> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let step = self
                .steps
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or(Step::Succeed);
            match step {
                Step::Fail(e) => Err(e),
                Step::Hang => std::future::pending().await,
                Step::Succeed => Ok(()),
            }
        }
    }

    #[async_trait]
    impl Source for Scripted {
        fn name(&self) -> &str {
            "fake://"
        }
        async fn check(&self) -> Result<()> {
            self.next().await
        }
        async fn stat(&self, _: &str) -> Result<Option<Meta>> {
            self.next()
                .await
                .map(|_| Some(Meta::dir(SystemTime::UNIX_EPOCH)))
        }
        async fn list(&self, _: &str, token: Option<String>) -> Result<Page> {
            self.next().await.map(|_| Page {
                entries: vec![],
                next: token,
            })
        }
        async fn read_into(&self, _: &str, _: &Meta, _: u64, buf: &mut BlockBuf) -> Result<()> {
            self.next().await?;
            buf.clear();
            buf.push(&vec![7; buf.capacity()]);
            Ok(())
        }
    }

    fn fast() -> Policy {
        Policy {
            attempts: 4,
            first_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(4),
            attempt_timeout: Duration::from_millis(200),
        }
    }

    fn down() -> Error {
        Error::unavailable("fake://", "connection refused")
    }

    fn retrying(fake: &Arc<Scripted>, policy: Policy) -> Retrying {
        Retrying::new(fake.clone(), policy)
    }

    #[tokio::test]
    async fn retries_transient_errors_until_success() {
        let fake = Scripted::new(vec![Step::Fail(down()), Step::Fail(down()), Step::Succeed]);
        let meta = Meta {
            kind: Kind::File,
            size: 3,
            mtime: SystemTime::UNIX_EPOCH,
            etag: None,
        };
        let got = retrying(&fake, fast())
            .read("a", &meta, 0, 3)
            .await
            .unwrap();
        assert_eq!(&got[..], &[7, 7, 7]);
        assert_eq!(fake.calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn gives_up_after_the_last_attempt() {
        let fake = Scripted::new((0..10).map(|_| Step::Fail(down())).collect());
        let err = retrying(&fake, fast()).check().await.unwrap_err();
        assert!(matches!(err, Error::Unavailable { .. }), "{err}");
        assert_eq!(fake.calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn never_retries_final_errors() {
        let finals = [
            Error::NotFound("a".into()),
            Error::Denied {
                source_name: "fake://".into(),
                message: "403".into(),
            },
            Error::Changed("a".into()),
            Error::invalid("path", "bad"),
        ];
        for e in finals {
            let shown = e.to_string();
            let fake = Scripted::new(vec![Step::Fail(e)]);
            let err = retrying(&fake, fast()).stat("a").await.unwrap_err();
            assert_eq!(err.to_string(), shown);
            assert_eq!(fake.calls.load(Ordering::SeqCst), 1, "{shown} was retried");
        }
    }

    #[tokio::test]
    async fn a_hung_attempt_times_out_and_is_retried() {
        let fake = Scripted::new(vec![Step::Hang, Step::Succeed]);
        let page = retrying(&fake, fast())
            .list("d", Some("t".into()))
            .await
            .unwrap();
        assert_eq!(
            page.next.as_deref(),
            Some("t"),
            "the token reaches the retried call"
        );
        assert_eq!(fake.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_store_that_never_answers_fails_within_the_bound() {
        let fake = Scripted::new((0..10).map(|_| Step::Hang).collect());
        let policy = fast();
        let started = Instant::now();
        let err = retrying(&fake, policy.clone()).check().await.unwrap_err();
        assert!(matches!(err, Error::Unavailable { .. }), "{err}");
        assert!(err.to_string().contains("no answer"), "{err}");
        assert_eq!(fake.calls.load(Ordering::SeqCst), 4);
        assert!(started.elapsed() < policy.worst_case() + Duration::from_secs(1));
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let p = Policy {
            attempts: 10,
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            attempt_timeout: Duration::from_secs(1),
        };
        for (failed, full) in [(1, 100), (2, 200), (3, 400), (6, 2000), (40, 2000)] {
            let full = Duration::from_millis(full);
            for _ in 0..50 {
                let wait = p.backoff(failed);
                assert!(wait >= full / 2 && wait <= full, "try {failed}: {wait:?}");
            }
        }
        let waits: Vec<_> = (0..20).map(|_| p.backoff(3)).collect();
        assert!(waits.iter().any(|w| *w != waits[0]), "no jitter: {waits:?}");
    }

    #[test]
    fn default_policy_is_bounded_well_under_a_minute() {
        let p = Policy::default();
        assert!(p.attempts > 1);
        assert!(
            p.worst_case() < Duration::from_secs(50),
            "{:?}",
            p.worst_case()
        );
    }
}
