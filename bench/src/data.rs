//! The SeaweedFS side: where it is, and putting the dataset in a bucket once (a marker object
//! records the spec, so later runs reuse the data). Also the tmpfs copy for the memory limit.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use futures::{StreamExt, TryStreamExt, stream};

use crate::spec::{DatasetSpec, MARKER_KEY};

/// The S3 server the benchmark reads: SeaweedFS as the test services run it, found and checked
/// the same way the tests find it.
pub type S3Env = fluid_tests::services::S3Server;

const PART_BYTES: u64 = 16 << 20;
pub const UPLOADS_IN_FLIGHT: usize = 32;

/// Makes `bucket` hold exactly `spec`'s dataset: reused when its marker names the same spec,
/// otherwise completed (objects already there with the right size are kept) or, when it holds
/// another spec, emptied and refilled. Returns whether the data was reused as it was.
pub async fn ensure_dataset(client: &Client, bucket: &str, spec: &DatasetSpec) -> Result<bool> {
    let ctx = |what: &str| format!("dataset upload to bucket {bucket}: {what}");
    ensure_bucket(client, bucket).await?;
    let marker: Option<DatasetSpec> = match client
        .get_object()
        .bucket(bucket)
        .key(MARKER_KEY)
        .send()
        .await
    {
        Ok(out) => {
            let body = out
                .body
                .collect()
                .await
                .with_context(|| ctx("reading the marker"))?;
            serde_json::from_slice(&body.into_bytes()).ok()
        }
        Err(_) => None,
    };
    if marker.as_ref() == Some(spec) {
        return Ok(true);
    }
    let mut existing = list_sizes(client, bucket)
        .await
        .with_context(|| ctx("listing"))?;
    if marker.is_some() || existing.contains_key(MARKER_KEY) {
        eprintln!("[bench] bucket {bucket} holds another dataset spec; emptying it");
        let keys: Vec<String> = existing.keys().cloned().collect();
        delete_keys(client, bucket, &keys)
            .await
            .with_context(|| ctx("emptying"))?;
        existing.clear();
    }
    let todo: Vec<(String, u64, u64)> = spec
        .objects()
        .into_iter()
        .filter(|(key, _, size)| existing.get(key) != Some(size))
        .collect();
    let total_bytes: u64 = todo.iter().map(|t| t.2).sum();
    eprintln!(
        "[bench] uploading {} objects ({:.1} MiB) to bucket {bucket} (once; later runs reuse them)",
        todo.len(),
        total_bytes as f64 / (1 << 20) as f64
    );
    let t0 = Instant::now();
    let done = Arc::new(AtomicU64::new(0));
    let n = todo.len() as u64;
    let (big, small): (Vec<_>, Vec<_>) = todo.into_iter().partition(|t| t.2 > PART_BYTES);
    for (key, id, size) in big {
        put_multipart(client, bucket, spec, &key, id, size)
            .await
            .with_context(|| ctx(&key))?;
        done.fetch_add(1, Ordering::Relaxed);
    }
    stream::iter(small)
        .map(|(key, id, size)| {
            let done = done.clone();
            async move {
                put(client, bucket, &key, spec.content(id, size))
                    .await
                    .with_context(|| ctx(&key))?;
                let d = done.fetch_add(1, Ordering::Relaxed) + 1;
                if d.is_multiple_of(5000) {
                    eprintln!(
                        "[bench]   {d}/{n} objects ({:.0} s)",
                        t0.elapsed().as_secs_f64()
                    );
                }
                anyhow::Ok(())
            }
        })
        .buffer_unordered(UPLOADS_IN_FLIGHT)
        .try_collect::<Vec<()>>()
        .await?;
    let marker = serde_json::to_vec_pretty(spec)?;
    put(client, bucket, MARKER_KEY, marker)
        .await
        .with_context(|| ctx("writing the marker"))?;
    eprintln!("[bench] upload done in {:.0} s", t0.elapsed().as_secs_f64());
    Ok(false)
}

/// Puts one object in a single request.
pub async fn put(client: &Client, bucket: &str, key: &str, body: Vec<u8>) -> Result<()> {
    client
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body))
        .send()
        .await?;
    Ok(())
}

/// Creates `bucket` unless it is there.
pub async fn ensure_bucket(client: &Client, bucket: &str) -> Result<()> {
    if client.head_bucket().bucket(bucket).send().await.is_err() {
        client
            .create_bucket()
            .bucket(bucket)
            .send()
            .await
            .with_context(|| format!("creating bucket {bucket}"))?;
    }
    Ok(())
}

async fn list_sizes(client: &Client, bucket: &str) -> Result<HashMap<String, u64>> {
    let mut out = HashMap::new();
    let mut pages = client
        .list_objects_v2()
        .bucket(bucket)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page?;
        for o in page.contents() {
            if let Some(k) = o.key() {
                out.insert(k.to_string(), o.size().unwrap_or(0) as u64);
            }
        }
    }
    Ok(out)
}

async fn delete_keys(client: &Client, bucket: &str, keys: &[String]) -> Result<()> {
    for chunk in keys.chunks(1000) {
        let ids = chunk
            .iter()
            .map(|k| ObjectIdentifier::builder().key(k).build())
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let del = Delete::builder()
            .set_objects(Some(ids))
            .quiet(true)
            .build()?;
        client
            .delete_objects()
            .bucket(bucket)
            .delete(del)
            .send()
            .await?;
    }
    Ok(())
}

async fn put_multipart(
    client: &Client,
    bucket: &str,
    spec: &DatasetSpec,
    key: &str,
    id: u64,
    size: u64,
) -> Result<()> {
    let up = client
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .send()
        .await?;
    let upload_id = up.upload_id().context("no upload id")?.to_string();
    let parts = size.div_ceil(PART_BYTES);
    let mut done: Vec<CompletedPart> = stream::iter(0..parts)
        .map(|p| {
            let upload_id = upload_id.clone();
            async move {
                let off = p * PART_BYTES;
                let len = PART_BYTES.min(size - off);
                let mut buf = vec![0u8; len as usize];
                spec.fill(id, off, &mut buf);
                let out = client
                    .upload_part()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .part_number(p as i32 + 1)
                    .body(ByteStream::from(buf))
                    .send()
                    .await?;
                anyhow::Ok(
                    CompletedPart::builder()
                        .part_number(p as i32 + 1)
                        .set_e_tag(out.e_tag().map(str::to_string))
                        .build(),
                )
            }
        })
        .buffer_unordered(4)
        .try_collect()
        .await?;
    done.sort_by_key(|p| p.part_number());
    client
        .complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(&upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(done))
                .build(),
        )
        .send()
        .await?;
    Ok(())
}

/// Which part of the dataset a tmpfs copy holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Seq,
    Epoch,
    Meta,
}

/// Writes one part of the dataset under `dir` with the bucket's key layout (the memory
/// limit reads it through the same code as the mounts). Fails when tmpfs lacks the room.
pub fn materialize(spec: &DatasetSpec, dir: &Path, part: Part) -> Result<PathBuf> {
    let need = match part {
        Part::Seq => spec.seq_bytes,
        Part::Epoch => spec.epoch_total_bytes(),
        Part::Meta => u64::from(spec.meta_files) * 4096,
    };
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let free = free_bytes(dir)?;
    if free < need + (256 << 20) {
        bail!(
            "{} has {} MiB free, the copy needs {} MiB",
            dir.display(),
            free >> 20,
            need >> 20
        );
    }
    let write = |key: &str, id: u64, size: u64| -> Result<()> {
        let path = dir.join(key);
        if let Some(p) = path.parent() {
            std::fs::create_dir_all(p)?;
        }
        let mut f =
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let mut buf = vec![0u8; (8u64 << 20).min(size) as usize];
        let mut off = 0;
        while off < size {
            let n = buf.len().min((size - off) as usize);
            spec.fill(id, off, &mut buf[..n]);
            std::io::Write::write_all(&mut f, &buf[..n])
                .with_context(|| format!("writing {}", path.display()))?;
            off += n as u64;
        }
        Ok(())
    };
    match part {
        Part::Seq => write(spec.seq_key(), spec.seq_id(), spec.seq_bytes)?,
        Part::Epoch => {
            for i in 0..spec.epoch_files {
                write(&spec.epoch_key(i), spec.epoch_id(i), spec.epoch_size(i))?;
            }
        }
        Part::Meta => {
            for i in 0..spec.meta_files {
                write(
                    &spec.meta_key(i),
                    spec.meta_id(i),
                    crate::spec::META_FILE_BYTES,
                )?;
            }
        }
    }
    Ok(dir.to_path_buf())
}

fn free_bytes(dir: &Path) -> Result<u64> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is NUL-terminated, st is a valid out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("statvfs {}", dir.display()));
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}
