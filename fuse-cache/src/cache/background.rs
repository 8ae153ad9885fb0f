//! One low-priority thread for the disk tiers' writes (new blocks, demotions, deletions).
//! Writing a block to the page cache costs about as much CPU as fetching it, so on a busy node
//! the writes would slow down the reads they exist to speed up; at a lower CPU priority they
//! run in the gaps instead. Nothing is lost while they wait: queued blocks stay pinned in the
//! memory tier, and misses wait for the queue when it is full.

use std::sync::OnceLock;
use std::sync::mpsc;

use tokio::sync::oneshot;

/// The writer thread's nice value: well below reads, yet not starved by other work (a niced
/// thread still gets about a tenth of a CPU against one busy thread at nice 0).
pub const NICE: i32 = 10;

type Job = Box<dyn FnOnce() + Send>;

fn queue() -> Option<&'static mpsc::Sender<Job>> {
    static QUEUE: OnceLock<Option<mpsc::Sender<Job>>> = OnceLock::new();
    QUEUE
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Job>();
            let spawned = std::thread::Builder::new()
                .name("fluid-cache-writer".into())
                .spawn(move || {
                    lower_priority();
                    for job in rx {
                        // A panicking job drops its reply (its caller sees None); the thread
                        // goes on with the next.
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                    }
                });
            match spawned {
                Ok(_) => Some(tx),
                Err(e) => {
                    tracing::warn!(
                        "no cache writer thread ({e}); disk writes run at normal priority"
                    );
                    None
                }
            }
        })
        .as_ref()
}

/// Lowers this thread's CPU priority (Linux: `setpriority` on a thread id affects only that
/// thread). Failing to is harmless: the writes then compete with reads as equals.
fn lower_priority() {
    // SAFETY: gettid and setpriority take no pointers; they act on the calling thread only.
    let r = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, NICE)
    };
    if r != 0 {
        tracing::debug!(
            "could not lower the cache writer's priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Runs `f` on the writer thread and waits for it; on a blocking-pool thread when the writer
/// cannot be started. `None` only if `f` panicked.
pub async fn run<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let Some(queue) = queue() else {
        return tokio::task::spawn_blocking(f).await.ok();
    };
    let (tx, rx) = oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = tx.send(f());
    });
    if let Err(mpsc::SendError(job)) = queue.send(job) {
        // The thread is gone (it catches panics, so this should not happen): run it here.
        let _ = tokio::task::spawn_blocking(job).await;
    }
    rx.await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_jobs_in_order_on_one_thread() {
        let a = run(|| std::thread::current().name().map(str::to_string)).await;
        let b = run(|| std::thread::current().name().map(str::to_string)).await;
        assert_eq!(a, Some(Some("fluid-cache-writer".to_string())));
        assert_eq!(a, b);
        assert_eq!(run(|| 7).await, Some(7));
    }
}
