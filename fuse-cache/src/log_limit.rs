//! Warnings that could come once per request (a read of a store that is down) are let through
//! a few per minute, and the rest counted: the daemon log stays readable and bounded (the
//! node plugin keeps it for weeks), and the next warning let through says how many were not.

use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct RateLimit {
    burst: u64,
    window: Duration,
    state: Mutex<Window>,
}

struct Window {
    start: Option<Instant>,
    shown: u64,
    suppressed: u64,
}

impl RateLimit {
    /// At most `burst` warnings each `window`.
    pub const fn new(burst: u64, window: Duration) -> RateLimit {
        RateLimit {
            burst,
            window,
            state: Mutex::new(Window {
                start: None,
                shown: 0,
                suppressed: 0,
            }),
        }
    }

    /// Whether to log this one: `Some(n)` with the number left out since the last one logged,
    /// `None` to leave it out.
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(Instant::now())
    }

    fn admit_at(&self, now: Instant) -> Option<u64> {
        let mut w = crate::lock(&self.state);
        if w.start.is_none_or(|s| now.duration_since(s) >= self.window) {
            w.start = Some(now);
            w.shown = 0;
        }
        if w.shown < self.burst {
            w.shown += 1;
            Some(std::mem::take(&mut w.suppressed))
        } else {
            w.suppressed += 1;
            None
        }
    }
}

/// " (N more were not logged)" after a warning, or nothing.
pub fn left_out(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} more like it were not logged)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_a_window_then_the_count_of_those_left_out() {
        let limit = RateLimit::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        let admitted: Vec<Option<u64>> = (0..5).map(|_| limit.admit_at(t0)).collect();
        assert_eq!(admitted, [Some(0), Some(0), Some(0), None, None]);
        // The next window: the first one logged says two were left out.
        let t1 = t0 + Duration::from_secs(61);
        assert_eq!(limit.admit_at(t1), Some(2));
        assert_eq!(limit.admit_at(t1), Some(0));
        assert_eq!(left_out(2), " (2 more like it were not logged)");
        assert_eq!(left_out(0), "");
    }
}
