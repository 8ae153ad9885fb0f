//! Prometheus text exposition of the daemon's figures on a small HTTP endpoint.

use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::control::Control;
use crate::error::{Error, Result};

/// Upper bounds of the latency buckets, in seconds: from a memory hit to a slow remote read.
const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5, 10.0,
];

/// A Prometheus histogram of durations, lock-free.
#[derive(Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_nanos
            .fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Appends the histogram in text format (cumulative buckets, then sum and count).
    pub fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, c) in BUCKETS.iter().zip(&self.counts) {
            cumulative += c.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// Renders the metrics in Prometheus text format.
pub fn render(control: &Control) -> String {
    let s = control.stats();
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, u64)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    let tier = |t: &fluid_proto::fluid::TierStats| {
        format!(
            "{{tier=\"{}\",path=\"{}\"}}",
            t.medium,
            t.path.replace('"', "'")
        )
    };
    family(
        "fluid_cache_hits_total",
        "counter",
        "Block reads served by a cache tier.",
        s.tiers.iter().map(|t| (tier(t), t.hits)).collect(),
    );
    family(
        "fluid_cache_misses_total",
        "counter",
        "Block reads that went to the source.",
        vec![(String::new(), s.misses)],
    );
    family(
        "fluid_cache_used_bytes",
        "gauge",
        "Bytes held by a cache tier.",
        s.tiers.iter().map(|t| (tier(t), t.used_bytes)).collect(),
    );
    family(
        "fluid_cache_capacity_bytes",
        "gauge",
        "Quota of a cache tier.",
        s.tiers
            .iter()
            .map(|t| (tier(t), t.capacity_bytes))
            .collect(),
    );
    family(
        "fluid_cache_evictions_total",
        "counter",
        "Blocks evicted from a cache tier.",
        s.tiers.iter().map(|t| (tier(t), t.evictions)).collect(),
    );
    family(
        "fluid_source_read_bytes_total",
        "counter",
        "Bytes read from the sources.",
        vec![(String::new(), s.source_bytes_read)],
    );
    family(
        "fluid_source_requests_total",
        "counter",
        "Range reads sent to the sources.",
        vec![(String::new(), s.source_requests)],
    );
    family(
        "fluid_served_bytes_total",
        "counter",
        "Bytes returned to readers by the daemon (not those of passthrough opens).",
        vec![(String::new(), s.bytes_served)],
    );
    family(
        "fluid_passthrough_opens_total",
        "counter",
        "Opens of files the memory tier held whole, read by the kernel itself.",
        vec![(String::new(), s.passthrough_opens)],
    );
    let c = &control.reader.counters;
    c.read_latency.render(
        "fluid_read_duration_seconds",
        "Time to answer a read through the mount.",
        &mut out,
    );
    c.source_latency.render(
        "fluid_source_request_duration_seconds",
        "Time of one range read from a source.",
        &mut out,
    );
    out
}

/// Binds now (so a busy port fails the start) and serves in the background.
pub async fn serve(addr: SocketAddr, control: Arc<Control>) -> Result<SocketAddr> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| Error::io(format!("metrics listen on {addr}"), e))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::io("metrics address", e))?;
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                continue;
            };
            let control = control.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]);
                let ok = request.starts_with("GET /metrics") || request.starts_with("GET / ");
                let (status, body) = if ok {
                    ("200 OK", render(&control))
                } else {
                    ("404 Not Found", "try /metrics\n".to_string())
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    Ok(bound)
}
