//! A generated dataset tree (nested and empty directories, block-boundary sizes, a large file,
//! many small files, awkward names), written to each kind of store, and checked through a
//! mount against what was written.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use rand::{Rng, RngCore, SeedableRng};
use sha2::{Digest, Sha256};

#[derive(Clone, Debug)]
pub struct TreeSpec {
    pub block_size: u64,
    pub big_file: u64,
    pub small_files: usize,
}

/// Files (relative path -> content) and every directory (relative, "" is the root).
#[derive(Clone, Debug, Default)]
pub struct Tree {
    pub files: BTreeMap<String, Bytes>,
    pub dirs: BTreeSet<String>,
}

const VERIFY_READERS: usize = 4;

pub const AWKWARD_NAMES: &[&str] = &[
    "with space.txt",
    "ünïcödé-文件.bin",
    "100%.txt",
    "a+b=c.txt",
    "semi;colon&amp.txt",
];

fn random(rng: &mut rand::rngs::StdRng, len: u64) -> Bytes {
    let mut v = vec![0u8; len as usize];
    rng.fill_bytes(&mut v);
    Bytes::from(v)
}

pub fn generate(spec: &TreeSpec, seed: u64) -> Tree {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let bs = spec.block_size;
    let mut t = Tree::default();
    for (name, size) in [
        ("empty", 0),
        ("one", 1),
        ("block-1", bs - 1),
        ("block", bs),
        ("block+1", bs + 1),
        ("three-and-a-bit", 3 * bs + 123),
    ] {
        t.files
            .insert(format!("sizes/{name}"), random(&mut rng, size));
    }
    t.files
        .insert("big.bin".into(), random(&mut rng, spec.big_file));
    t.files
        .insert("a/b/c/deep.txt".into(), Bytes::from_static(b"deep\n"));
    t.files
        .insert("a/b/sibling.txt".into(), random(&mut rng, 777));
    for name in AWKWARD_NAMES {
        t.files
            .insert(format!("names/{name}"), random(&mut rng, 1000));
    }
    t.files
        .insert(format!("names/{}", "n".repeat(200)), random(&mut rng, 10));
    for i in 0..spec.small_files {
        let len = rng.random_range(0..4096);
        t.files
            .insert(format!("many/f{i:05}"), random(&mut rng, len));
    }
    t.dirs.insert("empty-dir".into());
    t.dirs.insert("a/empty".into());
    let parents: Vec<String> = t
        .files
        .keys()
        .chain(t.dirs.clone().iter())
        .flat_map(|p| ancestors(p))
        .collect();
    t.dirs.extend(parents);
    t
}

/// "a/b/c" -> ["", "a", "a/b"]
fn ancestors(path: &str) -> Vec<String> {
    let parts: Vec<&str> = path.split('/').collect();
    (0..parts.len()).map(|i| parts[..i].join("/")).collect()
}

impl Tree {
    /// Adds `count` files of `size` random bytes as `dir/shard-N` (a dataset of shards, as
    /// training sets are often cut).
    pub fn add_shards(&mut self, dir: &str, count: usize, size: u64, seed: u64) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        self.dirs.insert(dir.to_string());
        for n in 0..count {
            self.files
                .insert(format!("{dir}/shard-{n}"), random(&mut rng, size));
        }
    }

    /// Names directly in `dir`.
    pub fn children(&self, dir: &str) -> BTreeSet<String> {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        self.files
            .keys()
            .chain(self.dirs.iter())
            .filter_map(|p| p.strip_prefix(&prefix))
            .filter(|rest| !rest.is_empty() && !rest.contains('/'))
            .map(str::to_string)
            .collect()
    }

    pub fn write_local(&self, root: &Path) -> Result<()> {
        for d in &self.dirs {
            std::fs::create_dir_all(root.join(d))?;
        }
        for (p, data) in &self.files {
            std::fs::write(root.join(p), data)?;
        }
        Ok(())
    }

    /// Uploads to `bucket` under `prefix` (no slashes at the ends); empty directories become
    /// zero-byte `dir/` marker objects, as S3 consoles create them.
    pub async fn upload_s3(
        &self,
        s3: &aws_sdk_s3::Client,
        bucket: &str,
        prefix: &str,
    ) -> Result<()> {
        let key = |p: &str| {
            if prefix.is_empty() {
                p.to_string()
            } else {
                format!("{prefix}/{p}")
            }
        };
        let mut objects: Vec<(String, Bytes)> = self
            .files
            .iter()
            .map(|(p, d)| (key(p), d.clone()))
            .collect();
        for d in &self.dirs {
            if !d.is_empty() && self.children(d).is_empty() {
                objects.push((format!("{}/", key(d)), Bytes::new()));
            }
        }
        let s3 = Arc::new(s3.clone());
        let bucket = Arc::<str>::from(bucket);
        let tasks = objects.into_iter().map(|(k, data)| {
            let (s3, bucket) = (s3.clone(), bucket.clone());
            async move {
                s3.put_object()
                    .bucket(bucket.as_ref())
                    .key(&k)
                    .body(data.into())
                    .send()
                    .await
                    .with_context(|| format!("put {k}"))
            }
        });
        use futures::StreamExt;
        let results: Vec<_> = futures::stream::iter(tasks)
            .buffer_unordered(32)
            .collect()
            .await;
        results.into_iter().collect::<Result<Vec<_>>>()?;
        Ok(())
    }

    pub async fn upload_hdfs(&self, client: &hdfs_native::Client, root: &str) -> Result<()> {
        for d in &self.dirs {
            client
                .mkdirs(&format!("{root}/{d}"), 0o755, true)
                .await
                .with_context(|| format!("mkdirs {d}"))?;
        }
        use futures::StreamExt;
        let tasks = self.files.iter().map(|(p, data)| async move {
            let mut w = client
                .create(&format!("{root}/{p}"), hdfs_native::WriteOptions::default())
                .await
                .with_context(|| format!("create {p}"))?;
            w.write_bytes(data.clone())
                .await
                .with_context(|| format!("write {p}"))?;
            w.close().await.with_context(|| format!("close {p}"))
        });
        let results: Vec<_> = futures::stream::iter(tasks)
            .buffer_unordered(32)
            .collect()
            .await;
        results.into_iter().collect::<Result<Vec<_>>>()?;
        Ok(())
    }

    /// Every file's size and sha256, every directory's listing, and random ranged reads, as
    /// seen through `mnt`, equal the tree.
    pub fn verify(&self, mnt: &Path, random_reads: usize) -> Result<()> {
        for d in &self.dirs {
            let listed: BTreeSet<String> = std::fs::read_dir(mnt.join(d))
                .with_context(|| format!("listing {d:?}"))?
                .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect::<std::io::Result<_>>()?;
            let expected = self.children(d);
            ensure!(
                listed == expected,
                "listing of {d:?}: got {} entries, expected {}; missing {:?}, extra {:?}",
                listed.len(),
                expected.len(),
                expected.difference(&listed).take(5).collect::<Vec<_>>(),
                listed.difference(&expected).take(5).collect::<Vec<_>>()
            );
            ensure!(
                std::fs::metadata(mnt.join(d))?.is_dir(),
                "{d:?} is not a directory"
            );
        }
        // Files are checked by several readers at once, as a training job reads them.
        let files: Vec<(&String, &Bytes)> = self.files.iter().collect();
        let chunk = files.len().div_ceil(VERIFY_READERS).max(1);
        std::thread::scope(|s| {
            let workers: Vec<_> = files
                .chunks(chunk)
                .map(|part| {
                    s.spawn(move || -> Result<()> {
                        for (p, data) in part {
                            let meta = std::fs::metadata(mnt.join(p))
                                .with_context(|| format!("stat {p}"))?;
                            ensure!(
                                meta.len() == data.len() as u64,
                                "{p}: size {} != {}",
                                meta.len(),
                                data.len()
                            );
                            let got =
                                std::fs::read(mnt.join(p)).with_context(|| format!("read {p}"))?;
                            ensure!(
                                Sha256::digest(&got) == Sha256::digest(data),
                                "{p}: content differs"
                            );
                        }
                        Ok(())
                    })
                })
                .collect();
            workers
                .into_iter()
                .try_for_each(|w| w.join().map_err(|_| anyhow::anyhow!("reader panicked"))?)
        })?;
        let mut rng = rand::rng();
        let large: Vec<_> = self.files.iter().filter(|(_, d)| d.len() > 1).collect();
        for _ in 0..random_reads {
            let (p, data) = large[rng.random_range(0..large.len())];
            let off = rng.random_range(0..data.len());
            let len = rng.random_range(1..=(data.len() - off).min(3 << 20));
            let f = std::fs::File::open(mnt.join(p))?;
            let mut buf = vec![0u8; len];
            let n = f.read_at(&mut buf, off as u64)?;
            // A single pread may return less than asked; what it returns must match.
            if n == 0 {
                bail!("{p}: empty read at {off}");
            }
            ensure!(
                buf[..n] == data[off..off + n],
                "{p}: bytes differ at {off}+{n}"
            );
        }
        Ok(())
    }
}
