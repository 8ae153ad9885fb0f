//! The benchmark dataset: which objects the bucket holds and what bytes are in them. Every
//! byte is a function of (seed, object id, offset), so any range a system returns can be
//! checked without keeping a copy, and the same bytes can be written to tmpfs for the memory
//! limit.

use serde::{Deserialize, Serialize};

/// Bump when the layout or the generator changes: a bucket with another format is refilled.
pub const FORMAT: u32 = 1;

/// The object that records which dataset a bucket holds; written last, after every upload.
pub const MARKER_KEY: &str = "bench-spec.json";

/// Object ids: the sequential object is 0, epoch files start at 1, meta entries after them.
const EPOCH_ID0: u64 = 1;
const META_ID0: u64 = 1 << 24;

/// Bytes in every file of the meta tree (small; the workload stats them, never reads them).
pub const META_FILE_BYTES: u64 = 16;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetSpec {
    pub format: u32,
    pub seed: u64,
    /// Size of the one object of the `seq` and `rand` workloads.
    pub seq_bytes: u64,
    pub epoch_files: u32,
    pub epoch_dirs: u32,
    pub epoch_min_bytes: u64,
    pub epoch_max_bytes: u64,
    pub meta_files: u32,
    pub meta_dirs: u32,
}

impl DatasetSpec {
    pub fn full() -> Self {
        DatasetSpec {
            format: FORMAT,
            seed: 0x5eed_f1d0,
            seq_bytes: 1 << 30,
            epoch_files: 20_000,
            epoch_dirs: 20,
            epoch_min_bytes: 50 << 10,
            epoch_max_bytes: 200 << 10,
            meta_files: 100_000,
            meta_dirs: 100,
        }
    }

    pub fn quick() -> Self {
        DatasetSpec {
            seq_bytes: 128 << 20,
            epoch_files: 2_000,
            epoch_dirs: 4,
            meta_files: 10_000,
            meta_dirs: 10,
            ..Self::full()
        }
    }

    /// A bucket per mode, so a quick run never destroys the full dataset.
    pub fn bucket(&self, quick: bool) -> String {
        if quick {
            "fluid-bench-quick".into()
        } else {
            "fluid-bench-full".into()
        }
    }

    pub fn seq_key(&self) -> &'static str {
        "seq/big.bin"
    }

    pub fn seq_id(&self) -> u64 {
        0
    }

    pub fn epoch_key(&self, i: u32) -> String {
        format!("epoch/d{:02}/f{:05}.bin", i % self.epoch_dirs, i)
    }

    pub fn epoch_id(&self, i: u32) -> u64 {
        EPOCH_ID0 + u64::from(i)
    }

    /// Sizes spread evenly over [min, max], fixed by the seed.
    pub fn epoch_size(&self, i: u32) -> u64 {
        let span = self.epoch_max_bytes - self.epoch_min_bytes + 1;
        self.epoch_min_bytes + splitmix64(self.seed ^ 0xe90c ^ (u64::from(i) << 20)) % span
    }

    pub fn epoch_total_bytes(&self) -> u64 {
        (0..self.epoch_files).map(|i| self.epoch_size(i)).sum()
    }

    pub fn meta_dir(&self, d: u32) -> String {
        format!("meta/d{d:03}")
    }

    pub fn meta_key(&self, i: u32) -> String {
        format!("{}/e{:06}", self.meta_dir(i % self.meta_dirs), i)
    }

    pub fn meta_id(&self, i: u32) -> u64 {
        META_ID0 + u64::from(i)
    }

    /// Entries a full walk of `meta/` stats: its directories and their files.
    pub fn meta_entries(&self) -> u64 {
        u64::from(self.meta_files) + u64::from(self.meta_dirs)
    }

    /// Every object of the dataset as (key, id, size), the marker excepted.
    pub fn objects(&self) -> Vec<(String, u64, u64)> {
        let mut v = Vec::with_capacity(1 + self.epoch_files as usize + self.meta_files as usize);
        v.push((self.seq_key().to_string(), self.seq_id(), self.seq_bytes));
        for i in 0..self.epoch_files {
            v.push((self.epoch_key(i), self.epoch_id(i), self.epoch_size(i)));
        }
        for i in 0..self.meta_files {
            v.push((self.meta_key(i), self.meta_id(i), META_FILE_BYTES));
        }
        v
    }

    /// The bytes of object `id` at `offset..offset + buf.len()`.
    pub fn fill(&self, id: u64, offset: u64, buf: &mut [u8]) {
        fill(self.seed, id, offset, buf)
    }

    /// Whether `data` is what object `id` holds at `offset` (checks at most the first 64
    /// bytes: enough to catch a wrong range, cheap enough not to disturb the timing).
    pub fn check(&self, id: u64, offset: u64, data: &[u8]) -> bool {
        let n = data.len().min(64);
        let mut want = [0u8; 64];
        self.fill(id, offset, &mut want[..n]);
        want[..n] == data[..n]
    }

    /// The whole object `id` of `size` bytes.
    pub fn content(&self, id: u64, size: u64) -> Vec<u8> {
        let mut v = vec![0u8; size as usize];
        self.fill(id, 0, &mut v);
        v
    }
}

/// SplitMix64: a bijection on u64 with good mixing, so distinct (id, word) give distinct words.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn word(seed: u64, id: u64, w: u64) -> u64 {
    // ids < 2^25 and words < 2^37 (1 TiB objects) never collide after the shift.
    splitmix64(seed ^ (id << 38) ^ w)
}

pub fn fill(seed: u64, id: u64, offset: u64, buf: &mut [u8]) {
    let mut pos = offset;
    let mut i = 0;
    // Unaligned head.
    if !pos.is_multiple_of(8) {
        let bytes = word(seed, id, pos / 8).to_le_bytes();
        let start = (pos % 8) as usize;
        let n = (8 - start).min(buf.len());
        buf[..n].copy_from_slice(&bytes[start..start + n]);
        i += n;
        pos += n as u64;
    }
    // Whole words, then the tail.
    let mut chunks = buf[i..].chunks_exact_mut(8);
    for chunk in &mut chunks {
        chunk.copy_from_slice(&word(seed, id, pos / 8).to_le_bytes());
        pos += 8;
    }
    let tail = chunks.into_remainder();
    if !tail.is_empty() {
        let bytes = word(seed, id, pos / 8).to_le_bytes();
        let n = tail.len();
        tail.copy_from_slice(&bytes[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_agree_with_the_whole() {
        let spec = DatasetSpec::quick();
        let whole = spec.content(7, 1000);
        for (off, len) in [
            (0usize, 1000usize),
            (3, 17),
            (8, 8),
            (5, 0),
            (999, 1),
            (13, 600),
        ] {
            let mut part = vec![0u8; len];
            spec.fill(7, off as u64, &mut part);
            assert_eq!(part, whole[off..off + len], "offset {off} len {len}");
            assert!(spec.check(7, off as u64, &part));
        }
        assert!(!spec.check(8, 0, &whole[..64]));
    }

    #[test]
    fn layout_is_stable_and_bounded() {
        let spec = DatasetSpec::quick();
        assert_eq!(spec.objects().len(), 1 + 2_000 + 10_000);
        for i in 0..spec.epoch_files {
            let s = spec.epoch_size(i);
            assert!((spec.epoch_min_bytes..=spec.epoch_max_bytes).contains(&s));
        }
        assert_eq!(spec.epoch_key(5), "epoch/d01/f00005.bin");
        assert_eq!(spec.meta_key(12), "meta/d002/e000012");
        assert_eq!(spec.meta_entries(), 10_010);
    }
}
