//! `fluid-sample`: makes the demo's sample dataset in an S3 bucket, and reads a mounted tree
//! back with parallel readers, printing throughput. Support tooling for `make demo`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use fluid_tests::services::S3Server;
use rand::{Rng, RngCore, SeedableRng};

#[derive(Parser)]
#[command(
    name = "fluid-sample",
    about = "Sample dataset maker and parallel reader for the demo"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Upload image-like files (50-500 KiB) and one large file to a new bucket.
    Upload {
        #[arg(long)]
        bucket: String,
        #[arg(long, default_value_t = 3000)]
        files: usize,
        #[arg(long, default_value_t = 512)]
        big_mib: u64,
    },
    /// Read every file under a directory with parallel readers; prints one JSON line.
    Read {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 8)]
        threads: usize,
    },
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Upload {
            bucket,
            files,
            big_mib,
        } => upload(&bucket, files, big_mib),
        Cmd::Read { dir, threads } => read(&dir, threads),
    }
}

fn upload(bucket: &str, files: usize, big_mib: u64) -> Result<()> {
    let server = S3Server::seaweedfs()?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let s3 = server.client();
        s3.create_bucket()
            .bucket(bucket)
            .send()
            .await
            .with_context(|| format!("creating bucket {bucket}"))?;
        let mut rng = rand::rngs::StdRng::seed_from_u64(42);
        let mut objects = Vec::with_capacity(files + 1);
        for i in 0..files {
            let mut data = vec![0u8; rng.random_range(50 * 1024..=500 * 1024)];
            rng.fill_bytes(&mut data);
            objects.push((format!("train/class-{:02}/img-{i:05}.jpg", i % 20), data));
        }
        let mut big = vec![0u8; (big_mib << 20) as usize];
        rng.fill_bytes(&mut big);
        objects.push(("archive/shard-000.tar".to_string(), big));
        let total: usize = objects.iter().map(|(_, d)| d.len()).sum();
        use futures::StreamExt;
        let puts = objects.into_iter().map(|(key, data)| {
            let s3 = s3.clone();
            async move {
                s3.put_object()
                    .bucket(bucket)
                    .key(&key)
                    .body(data.into())
                    .send()
                    .await
                    .with_context(|| format!("put {key}"))
            }
        });
        let results: Vec<_> = futures::stream::iter(puts)
            .buffer_unordered(32)
            .collect()
            .await;
        results.into_iter().collect::<Result<Vec<_>>>()?;
        println!(
            "uploaded {} files, {} MiB, to s3://{bucket}",
            files + 1,
            total >> 20
        );
        Ok(())
    })
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let e = e?;
        if e.file_type()?.is_dir() {
            walk(&e.path(), out)?
        } else {
            out.push(e.path())
        }
    }
    Ok(())
}

fn read(dir: &Path, threads: usize) -> Result<()> {
    let start = Instant::now();
    let mut files = Vec::new();
    walk(dir, &mut files)?;
    let queue = Arc::new(Mutex::new(files));
    let (bytes, count) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicUsize::new(0)));
    let errors = Arc::new(Mutex::new(Vec::new()));
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            let (queue, bytes, count, errors) =
                (queue.clone(), bytes.clone(), count.clone(), errors.clone());
            s.spawn(move || {
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let Some(path) = queue.lock().unwrap_or_else(|p| p.into_inner()).pop() else {
                        break;
                    };
                    let result = std::fs::File::open(&path).and_then(|mut f| {
                        use std::io::Read;
                        loop {
                            let n = f.read(&mut buf)?;
                            if n == 0 {
                                return Ok(());
                            }
                            bytes.fetch_add(n as u64, Ordering::Relaxed);
                        }
                    });
                    match result {
                        Ok(()) => _ = count.fetch_add(1, Ordering::Relaxed),
                        Err(e) => errors
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(format!("{}: {e}", path.display())),
                    }
                }
            });
        }
    });
    let secs = start.elapsed().as_secs_f64();
    let (b, n) = (bytes.load(Ordering::Relaxed), count.load(Ordering::Relaxed));
    let errors = errors.lock().unwrap_or_else(|p| p.into_inner());
    println!(
        "{{\"files\": {n}, \"bytes\": {b}, \"seconds\": {secs:.3}, \"mb_per_s\": {:.1}, \"files_per_s\": {:.1}, \"errors\": {}}}",
        b as f64 / secs / 1e6,
        n as f64 / secs,
        errors.len()
    );
    if let Some(first) = errors.first() {
        anyhow::bail!("{} files failed, first: {first}", errors.len());
    }
    Ok(())
}
