//! The source limit: each workload done straight against the S3 server with aws-sdk-s3, no
//! FUSE and no cache, so the table shows what the network path allows.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use aws_sdk_s3::Client;
use futures::{StreamExt, TryStreamExt, stream};

use crate::spec::DatasetSpec;
use crate::workloads::{Measurement, Params, Workload, epoch_order, rand_offsets};

/// Ranged GETs of the sequential object in flight at once, and their size.
pub const SEQ_RANGES_IN_FLIGHT: usize = 8;
pub const SEQ_RANGE_BYTES: u64 = 8 << 20;

pub async fn run(
    client: &Client,
    bucket: &str,
    spec: &DatasetSpec,
    p: &Params,
    w: Workload,
) -> Result<Measurement> {
    match w {
        Workload::Seq => seq(client, bucket, spec).await,
        Workload::Rand4k => rand(client, bucket, spec, p, 4096).await,
        Workload::Rand1m => rand(client, bucket, spec, p, 1 << 20).await,
        Workload::Epoch => epoch(client, bucket, spec, p).await,
        Workload::Meta => meta(client, bucket, spec).await,
    }
}

async fn get_range(
    client: &Client,
    bucket: &str,
    spec: &DatasetSpec,
    key: &str,
    id: u64,
    off: u64,
    len: u64,
) -> Result<u64> {
    let out = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .range(format!("bytes={off}-{}", off + len - 1))
        .send()
        .await
        .with_context(|| format!("GET {key} bytes {off}+{len}"))?;
    let body = out
        .body
        .collect()
        .await
        .with_context(|| format!("reading GET {key} bytes {off}+{len}"))?
        .into_bytes();
    if body.len() as u64 != len || !spec.check(id, off, &body) {
        bail!(
            "GET {key} bytes {off}+{len}: wrong answer ({} bytes)",
            body.len()
        );
    }
    Ok(len)
}

async fn seq(client: &Client, bucket: &str, spec: &DatasetSpec) -> Result<Measurement> {
    let size = spec.seq_bytes;
    let t0 = Instant::now();
    let ranges = size.div_ceil(SEQ_RANGE_BYTES);
    let bytes: Vec<u64> = stream::iter(0..ranges)
        .map(|r| {
            let off = r * SEQ_RANGE_BYTES;
            let len = SEQ_RANGE_BYTES.min(size - off);
            get_range(
                client,
                bucket,
                spec,
                spec.seq_key(),
                spec.seq_id(),
                off,
                len,
            )
        })
        .buffered(SEQ_RANGES_IN_FLIGHT)
        .try_collect()
        .await?;
    Ok(Measurement {
        phase: "limit".into(),
        ops: ranges,
        bytes: bytes.iter().sum(),
        secs: t0.elapsed().as_secs_f64(),
        partial: false,
    })
}

async fn rand(
    client: &Client,
    bucket: &str,
    spec: &DatasetSpec,
    p: &Params,
    len: u64,
) -> Result<Measurement> {
    let offsets = rand_offsets(spec, p, len);
    let t0 = Instant::now();
    let end = t0 + p.rand_time;
    let ops = Arc::new(AtomicU64::new(0));
    let workers = offsets.into_iter().map(|offs| {
        let ops = ops.clone();
        async move {
            for off in offs {
                if Instant::now() >= end {
                    break;
                }
                get_range(
                    client,
                    bucket,
                    spec,
                    spec.seq_key(),
                    spec.seq_id(),
                    off,
                    len,
                )
                .await?;
                ops.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }
    });
    futures::future::try_join_all(workers).await?;
    let ops = ops.load(Ordering::Relaxed);
    Ok(Measurement {
        phase: "limit".into(),
        ops,
        bytes: ops * len,
        secs: t0.elapsed().as_secs_f64(),
        partial: false,
    })
}

async fn epoch(
    client: &Client,
    bucket: &str,
    spec: &DatasetSpec,
    p: &Params,
) -> Result<Measurement> {
    let order = epoch_order(spec, 1);
    let t0 = Instant::now();
    let sizes: Vec<u64> = stream::iter(order)
        .map(|i| async move {
            let key = spec.epoch_key(i);
            let out = client
                .get_object()
                .bucket(bucket)
                .key(&key)
                .send()
                .await
                .with_context(|| format!("GET {key}"))?;
            let body = out
                .body
                .collect()
                .await
                .with_context(|| format!("reading GET {key}"))?
                .into_bytes();
            let want = spec.epoch_size(i);
            if body.len() as u64 != want || !spec.check(spec.epoch_id(i), 0, &body) {
                bail!(
                    "GET {key}: wrong answer ({} bytes, want {want})",
                    body.len()
                );
            }
            Ok(want)
        })
        .buffer_unordered(p.epoch_threads)
        .try_collect()
        .await?;
    Ok(Measurement {
        phase: "limit".into(),
        ops: sizes.len() as u64,
        bytes: sizes.iter().sum(),
        secs: t0.elapsed().as_secs_f64(),
        partial: false,
    })
}

/// One recursive listing of `meta/` (no delimiter, 1,000 keys a page): the entries a
/// FUSE file system must learn about at the least.
async fn meta(client: &Client, bucket: &str, spec: &DatasetSpec) -> Result<Measurement> {
    let t0 = Instant::now();
    let mut pages = client
        .list_objects_v2()
        .bucket(bucket)
        .prefix("meta/")
        .into_paginator()
        .send();
    let mut n = 0u64;
    while let Some(page) = pages.next().await {
        n += page.context("LIST meta/")?.contents().len() as u64;
    }
    if n != u64::from(spec.meta_files) {
        bail!(
            "LIST meta/ found {n} objects; the tree has {}",
            spec.meta_files
        );
    }
    // Count the directories too, as the mounted walk does.
    let entries = n + u64::from(spec.meta_dirs);
    Ok(Measurement {
        phase: "limit".into(),
        ops: entries,
        bytes: 0,
        secs: t0.elapsed().as_secs_f64(),
        partial: false,
    })
}
