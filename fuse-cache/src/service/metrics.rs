//! The daemon's figures for Prometheus: OpenMetrics text made by `prometheus-client`, served on
//! `GET /metrics` by the product's one HTTP server ([`fluid_proto::http`]).
//!
//! The counters and gauges are read at each scrape from the same figures `fluid-fuse stats`
//! shows (a [`Collector`]), so the two never disagree. The latency histograms are our own
//! lock-free ones (a read through the mount records one without a lock) that encode themselves
//! as typed histograms.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use fluid_proto::http::{self, Reply};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::peers::cluster::{Peer, PeerStats};
use crate::service::control::Control;

/// The OpenMetrics text format's media type, which Prometheus asks for and parses.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Labels of one sample.
type Labels = Vec<(&'static str, String)>;

/// One metric family: its samples, by labels (none: one sample without labels).
fn family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: Vec<(Labels, M)>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    let unlabelled = matches!(samples.as_slice(), [(labels, _)] if labels.is_empty());
    for (labels, m) in samples {
        if unlabelled {
            return m.encode(metric);
        }
        m.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A label value as the text format wants it (the encoder writes values as given).
fn label_value(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The figures of each peer talked to, labelled by its member name.
fn encode_peers(e: &mut DescriptorEncoder, peers: &[Arc<Peer>]) -> fmt::Result {
    let label = |p: &Peer| -> Labels { vec![("peer", label_value(&p.name))] };
    type Field = fn(&PeerStats) -> &AtomicU64;
    let counters: [(&str, &str, Field); 4] = [
        (
            "fluid_peer_requests",
            "Block requests sent to a peer.",
            |s| &s.requests,
        ),
        (
            "fluid_peer_read_bytes",
            "Block bytes received from a peer.",
            |s| &s.bytes,
        ),
        (
            "fluid_peer_errors",
            "Block requests to a peer that failed (and went elsewhere).",
            |s| &s.errors,
        ),
        (
            "fluid_peer_corrupt",
            "Blocks from a peer that failed their checksum.",
            |s| &s.corrupt,
        ),
    ];
    for (name, help, field) in counters {
        let samples = peers
            .iter()
            .map(|p| {
                (
                    label(p),
                    ConstCounter::new(field(&p.stats).load(Ordering::Relaxed)),
                )
            })
            .collect();
        family(e, name, help, MetricType::Counter, samples)?;
    }
    family(
        e,
        "fluid_peer_request_duration_seconds",
        "Time of one block request to a peer, to its last byte.",
        MetricType::Histogram,
        peers.iter().map(|p| (label(p), &p.stats.latency)).collect(),
    )
}

/// The daemon's figures, read at each scrape.
struct Figures(Arc<Control>);

impl fmt::Debug for Figures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Figures")
    }
}

impl Collector for Figures {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let s = self.0.stats();
        let tier = |t: &fluid_proto::fluid::TierStats| -> Labels {
            vec![
                ("tier", label_value(&t.medium)),
                ("path", label_value(&t.path)),
            ]
        };
        let per_tier = |value: fn(&fluid_proto::fluid::TierStats) -> u64| {
            s.tiers
                .iter()
                .map(|t| (tier(t), value(t)))
                .collect::<Vec<_>>()
        };
        let counters = |samples: Vec<(Labels, u64)>| {
            samples
                .into_iter()
                .map(|(l, v)| (l, ConstCounter::new(v)))
                .collect::<Vec<_>>()
        };
        let gauges = |samples: Vec<(Labels, u64)>| {
            samples
                .into_iter()
                .map(|(l, v)| (l, ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX))))
                .collect::<Vec<_>>()
        };
        let one = |v: u64| vec![(Labels::new(), v)];
        // Counter names lose their `_total` here: the encoder appends it to every sample.
        family(
            &mut e,
            "fluid_cache_hits",
            "Block reads served by a cache tier.",
            MetricType::Counter,
            counters(per_tier(|t| t.hits)),
        )?;
        family(
            &mut e,
            "fluid_cache_misses",
            "Block reads that went to the source.",
            MetricType::Counter,
            counters(one(s.misses)),
        )?;
        family(
            &mut e,
            "fluid_cache_used_bytes",
            "Bytes held by a cache tier.",
            MetricType::Gauge,
            gauges(per_tier(|t| t.used_bytes)),
        )?;
        family(
            &mut e,
            "fluid_cache_capacity_bytes",
            "Quota of a cache tier.",
            MetricType::Gauge,
            gauges(per_tier(|t| t.capacity_bytes)),
        )?;
        family(
            &mut e,
            "fluid_cache_evictions",
            "Blocks evicted from a cache tier.",
            MetricType::Counter,
            counters(per_tier(|t| t.evictions)),
        )?;
        family(
            &mut e,
            "fluid_source_read_bytes",
            "Bytes read from the sources.",
            MetricType::Counter,
            counters(one(s.source_bytes_read)),
        )?;
        family(
            &mut e,
            "fluid_source_requests",
            "Range reads sent to the sources.",
            MetricType::Counter,
            counters(one(s.source_requests)),
        )?;
        family(
            &mut e,
            "fluid_served_bytes",
            "Bytes returned to readers by the daemon (not those of passthrough opens).",
            MetricType::Counter,
            counters(one(s.bytes_served)),
        )?;
        family(
            &mut e,
            "fluid_passthrough_opens",
            "Opens of files the memory tier held whole, read by the kernel itself.",
            MetricType::Counter,
            counters(one(s.passthrough_opens)),
        )?;
        family(
            &mut e,
            "fluid_peer_hits",
            "Blocks read from the peer that owns them instead of the source.",
            MetricType::Counter,
            counters(one(s.peer_hits)),
        )?;
        family(
            &mut e,
            "fluid_peer_served_bytes",
            "Bytes of owned blocks served to the peers.",
            MetricType::Counter,
            counters(one(s.peer_served_bytes)),
        )?;
        family(
            &mut e,
            "fluid_cache_owned_bytes",
            "Cached bytes of the blocks this node owns: its share of the cluster's cache.",
            MetricType::Gauge,
            gauges(one(s.owned_bytes)),
        )?;
        if let Some(cluster) = &self.0.reader.cluster {
            encode_peers(&mut e, &cluster.peers())?;
        }
        let c = &self.0.reader.counters;
        family(
            &mut e,
            "fluid_read_duration_seconds",
            "Time to answer a read through the mount.",
            MetricType::Histogram,
            vec![(Labels::new(), &c.read_latency)],
        )?;
        family(
            &mut e,
            "fluid_source_request_duration_seconds",
            "Time of one range read from a source.",
            MetricType::Histogram,
            vec![(Labels::new(), &c.source_latency)],
        )
    }
}

/// The registry of the daemon's metrics.
pub fn registry(control: Arc<Control>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Figures(control)));
    registry
}

/// The metrics in the OpenMetrics text format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail; the encoders do not fail otherwise.
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, registry) {
        tracing::warn!("encoding the metrics: {e}");
    }
    out
}

/// Serves `GET /metrics` (and `/`) on `listener` for as long as the process runs.
pub async fn serve(listener: TcpListener, control: Arc<Control>) {
    let registry = Arc::new(registry(control));
    let handle = move |req: Request<Incoming>| {
        let registry = registry.clone();
        async move { answer(&req, &registry) }
    };
    http::serve(listener, handle, std::future::pending()).await
}

fn answer(req: &Request<Incoming>, registry: &Registry) -> Reply {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return http::text(StatusCode::METHOD_NOT_ALLOWED, "GET /metrics\n");
    }
    match req.uri().path() {
        "/metrics" | "/" => http::reply(StatusCode::OK, CONTENT_TYPE, render(registry)),
        _ => http::text(StatusCode::NOT_FOUND, "GET /metrics\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::histogram::Histogram;
    use std::time::Duration;

    #[test]
    fn histograms_encode_cumulative_buckets_with_inf_sum_and_count() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(20));
        let mut registry = Registry::default();
        registry.register("lat_seconds", "a latency", h);
        let text = render(&registry);
        assert!(text.contains("# TYPE lat_seconds histogram\n"), "{text}");
        assert!(text.contains("lat_seconds_count 3\n"), "{text}");
        assert!(text.contains("lat_seconds_sum 20.00305"), "{text}");
        let bucket = |le: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("lat_seconds_bucket{{le=\"{le}\"}} ")))
                .and_then(|v| v.parse::<u64>().ok())
        };
        assert_eq!(bucket("0.0001"), Some(1), "{text}");
        assert_eq!(bucket("0.005"), Some(2), "{text}");
        assert_eq!(bucket("10.0"), Some(2), "{text}");
        assert_eq!(bucket("+Inf"), Some(3), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
