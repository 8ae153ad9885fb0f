//! Byte sizes as people write them (`4MiB`, `100GB`), and the cache block size.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// The size of a cache block: files are cut into blocks of this many bytes, each fetched,
/// cached and evicted whole. A disk tier records it, so blocks cut at one size are never read
/// as blocks of another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockSize(u64);

impl BlockSize {
    /// Smaller blocks make the per-block bookkeeping (index entries, requests) dominate.
    pub const MIN: BlockSize = BlockSize(64 << 10);
    /// Larger blocks make a small random read fetch and hold too much.
    pub const MAX: BlockSize = BlockSize(64 << 20);
    pub const DEFAULT: BlockSize = BlockSize(4 << 20);

    /// A block size given in bytes; `field` names it in the error.
    pub fn new(bytes: u64, field: &str) -> Result<BlockSize> {
        if !(Self::MIN.0..=Self::MAX.0).contains(&bytes) {
            return Err(Error::invalid(
                field,
                format!(
                    "{} is out of range: a block size is between {} and {}",
                    format_size(bytes),
                    Self::MIN,
                    Self::MAX
                ),
            ));
        }
        Ok(BlockSize(bytes))
    }

    /// Parses `4MiB`, `1048576`, ...; `field` names it in the error.
    pub fn parse(text: &str, field: &str) -> Result<BlockSize> {
        let bytes = size(text).map_err(|m| Error::invalid(field, m))?;
        Self::new(bytes, field)
    }

    /// The value parser of a `--block-size` flag: clap names the flag, the message says why.
    pub fn from_flag(text: &str) -> std::result::Result<BlockSize, String> {
        BlockSize::parse(text, "block size").map_err(|e| match e {
            Error::Invalid { message, .. } => message,
            other => other.to_string(),
        })
    }

    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl Default for BlockSize {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The shortest exact form (`4MiB`), which [`BlockSize::parse`] reads back.
impl fmt::Display for BlockSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_size(self.0))
    }
}

impl FromStr for BlockSize {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        BlockSize::parse(s, "block size")
    }
}

impl Serialize for BlockSize {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for BlockSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Parses a byte size: a plain number is bytes; units `B`, `KiB`, `MiB`, `GiB`, `TiB` (powers
/// of 1024) and `KB`, `MB`, `GB`, `TB` (powers of 1000), case-insensitive, with an optional
/// space; a fraction is allowed with a unit (`1.5GiB`).
pub fn parse_size(s: &str) -> Result<u64> {
    size(s).map_err(|m| Error::invalid("size", m))
}

/// The value parser of a size flag (`--mem-budget 8GiB`): clap names the flag, the message
/// says why.
pub fn size_flag(s: &str) -> std::result::Result<u64, String> {
    size(s)
}

pub(crate) fn size(s: &str) -> std::result::Result<u64, String> {
    let bad = |why: &str| format!("bad size {s:?} ({why})");
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(bad(
            "expected a number with an optional unit, as in 4MiB, 2GiB, 100GB or 4096",
        ));
    }
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => {
            return Err(bad(
                "unknown unit; use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB",
            ));
        }
    };
    if let Ok(n) = num.parse::<u64>() {
        return n.checked_mul(mult).ok_or_else(|| bad("too large"));
    }
    let x: f64 = num.parse().map_err(|_| bad("not a number"))?;
    if mult == 1 {
        return Err(bad("not a whole number of bytes"));
    }
    // A fraction of a unit, to the nearest byte.
    let bytes = (x * mult as f64).round();
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(bad("too large"));
    }
    Ok(bytes as u64)
}

/// The shortest exact form of a size in binary units (`2GiB`, `1536KiB`, `1000`).
pub fn format_size(n: u64) -> String {
    for (unit, shift) in [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if n != 0 && n.trailing_zeros() >= shift {
            return format!("{}{unit}", n >> shift);
        }
    }
    n.to_string()
}

/// A size for people, as Fluid shows it in `kubectl get dataset`: two decimals in the largest
/// binary unit that keeps the number at least 1 (`14.65KiB`, `2.00GiB`, `512B`).
pub fn human_size(n: u64) -> String {
    for (unit, shift) in [
        ("PiB", 50),
        ("TiB", 40),
        ("GiB", 30),
        ("MiB", 20),
        ("KiB", 10),
    ] {
        if n >= 1 << shift {
            return format!("{:.2}{unit}", n as f64 / (1u64 << shift) as f64);
        }
    }
    format!("{n}B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_sizes() {
        assert_eq!(BlockSize::parse("4MiB", "b").unwrap(), BlockSize::DEFAULT);
        assert_eq!(BlockSize::parse("65536", "b").unwrap(), BlockSize::MIN);
        assert_eq!(BlockSize::parse("64MiB", "b").unwrap(), BlockSize::MAX);
        assert_eq!(BlockSize::DEFAULT.to_string(), "4MiB");
        for bad in ["128MiB", "1KiB", "0", "65535", "lots"] {
            let err = BlockSize::parse(bad, "parameters.blockSize")
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with("invalid parameters.blockSize:"),
                "{bad}: {err}"
            );
        }
        let err = BlockSize::parse("128MiB", "x").unwrap_err().to_string();
        assert!(err.contains("between 64KiB and 64MiB"), "{err}");
        let json = serde_json::to_string(&BlockSize::parse("1MiB", "b").unwrap()).unwrap();
        assert_eq!(json, "\"1MiB\"");
        assert!(serde_json::from_str::<BlockSize>("\"1GiB\"").is_err());
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(1023), "1023B");
        assert_eq!(human_size(15000), "14.65KiB");
        assert_eq!(human_size(2 << 30), "2.00GiB");
        assert_eq!(human_size(3 << 50), "3.00PiB");
    }

    #[test]
    fn sizes() {
        for (text, want) in [
            ("0", 0),
            ("4096", 4096),
            ("12B", 12),
            ("4KiB", 4096),
            ("4MiB", 4 << 20),
            ("2GiB", 2 << 30),
            ("1TiB", 1 << 40),
            ("10KB", 10_000),
            ("3MB", 3_000_000),
            ("100GB", 100_000_000_000),
            ("2TB", 2_000_000_000_000),
            ("2gib", 2 << 30),
            (" 2 GiB ", 2 << 30),
            ("1.5GiB", 3 << 29),
            ("0.5KiB", 512),
            ("1.1GB", 1_100_000_000),
        ] {
            assert_eq!(parse_size(text).unwrap(), want, "{text}");
        }
    }

    #[test]
    fn size_errors_name_the_text() {
        for text in [
            "",
            "lots",
            "GiB",
            "4 XB",
            "1.2.3MiB",
            "0.3B",
            "99999999999TiB",
            "-1",
            "1e9",
        ] {
            let err = parse_size(text).unwrap_err().to_string();
            assert!(err.contains(&format!("bad size {text:?}")), "{text}: {err}");
        }
    }

    #[test]
    fn format_sizes() {
        assert_eq!(format_size(0), "0");
        assert_eq!(format_size(1000), "1000");
        assert_eq!(format_size(1536 << 10), "1536KiB");
        assert_eq!(format_size(4 << 20), "4MiB");
        assert_eq!(format_size(1 << 40), "1TiB");
    }
}
