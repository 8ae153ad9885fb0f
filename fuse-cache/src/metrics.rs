//! Prometheus text exposition of the daemon's figures on a small HTTP endpoint.

use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::control::Control;
use crate::error::{Error, Result};

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
        "Bytes returned to readers.",
        vec![(String::new(), s.bytes_served)],
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
