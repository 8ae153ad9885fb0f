//! Tier specifications (Fluid's `tieredstore.levels`) and the size parser of the command line.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::error::{Error, Result};

/// The high watermark of a disk tier unless given: eviction starts above it.
pub const DEFAULT_HIGH: f64 = 0.95;
/// The low watermark of a disk tier unless given: eviction stops at or below it.
pub const DEFAULT_LOW: f64 = 0.7;

/// The kind of device a disk tier lives on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Medium {
    Ssd,
    Hdd,
}

impl Medium {
    /// `SSD` or `HDD`, as Fluid names the levels.
    pub fn name(self) -> &'static str {
        match self {
            Medium::Ssd => "SSD",
            Medium::Hdd => "HDD",
        }
    }
}

/// One cache tier, fastest first.
#[derive(Clone, Debug, PartialEq)]
pub enum TierSpec {
    /// Blocks in memory, least recently used dropped first.
    Mem { quota: u64 },
    /// Blocks as files under `dir/fluid-blocks`. When the bytes used pass `high * quota`, the
    /// least recently used blocks go until at most `low * quota` is used.
    Disk {
        medium: Medium,
        dir: PathBuf,
        quota: u64,
        high: f64,
        low: f64,
    },
}

impl TierSpec {
    /// A disk tier with the default watermarks.
    pub fn disk(medium: Medium, dir: impl Into<PathBuf>, quota: u64) -> Self {
        TierSpec::Disk {
            medium,
            dir: dir.into(),
            quota,
            high: DEFAULT_HIGH,
            low: DEFAULT_LOW,
        }
    }

    /// Parses the command line form: `mem:2GiB`, `ssd:/var/cache/fluid:100GiB,high=0.95,low=0.7`
    /// or `hdd:/path:1TiB`. The directory may itself hold `:` or `,`; the size is what follows
    /// the last `:`.
    pub fn parse(s: &str) -> Result<TierSpec> {
        let bad = |message: String| Error::invalid(format!("tier {s:?}"), message);
        let (medium, rest) = s
            .split_once(':')
            .ok_or_else(|| bad("expected MEDIUM:SIZE or MEDIUM:DIR:SIZE[,high=H,low=L]".into()))?;
        let spec = match medium.to_ascii_lowercase().as_str() {
            "mem" => {
                if rest.contains(':') || rest.contains(',') {
                    return Err(bad("a mem tier takes only a size, as in mem:2GiB".into()));
                }
                TierSpec::Mem {
                    quota: size(rest).map_err(bad)?,
                }
            }
            "ssd" | "hdd" => {
                let medium = if medium.eq_ignore_ascii_case("ssd") {
                    Medium::Ssd
                } else {
                    Medium::Hdd
                };
                let (dir, tail) = rest
                    .rsplit_once(':')
                    .ok_or_else(|| bad("expected MEDIUM:DIR:SIZE[,high=H,low=L]".into()))?;
                if dir.is_empty() {
                    return Err(bad("empty directory".into()));
                }
                let mut opts = tail.split(',');
                let quota = size(opts.next().unwrap_or_default()).map_err(bad)?;
                let (mut high, mut low) = (DEFAULT_HIGH, DEFAULT_LOW);
                for opt in opts {
                    let (name, value) = opt
                        .split_once('=')
                        .ok_or_else(|| bad(format!("bad option {opt:?}")))?;
                    let parsed = || {
                        value
                            .trim()
                            .parse::<f64>()
                            .map_err(|_| bad(format!("bad {name} {value:?}")))
                    };
                    match name.trim() {
                        "high" => high = parsed()?,
                        "low" => low = parsed()?,
                        _ => {
                            return Err(bad(format!("unknown option {name:?} (known: high, low)")));
                        }
                    }
                }
                TierSpec::Disk {
                    medium,
                    dir: PathBuf::from(dir),
                    quota,
                    high,
                    low,
                }
            }
            _ => {
                return Err(bad(format!(
                    "unknown medium {medium:?} (known: mem, ssd, hdd)"
                )));
            }
        };
        spec.check().map_err(bad)?;
        Ok(spec)
    }

    /// Checks the numbers of a spec built in code the way [`TierSpec::parse`] checks text.
    pub fn validate(&self) -> Result<()> {
        self.check()
            .map_err(|m| Error::invalid(format!("tier {self}"), m))
    }

    fn check(&self) -> std::result::Result<(), String> {
        if self.quota() == 0 {
            return Err("quota must be more than 0".into());
        }
        if let TierSpec::Disk { dir, high, low, .. } = self {
            if dir.as_os_str().is_empty() {
                return Err("empty directory".into());
            }
            // Written so that NaN fails too.
            if !(*low > 0.0 && low < high && *high <= 1.0) {
                return Err(format!(
                    "watermarks must satisfy 0 < low < high <= 1 (low={low}, high={high})"
                ));
            }
        }
        Ok(())
    }

    pub fn quota(&self) -> u64 {
        match self {
            TierSpec::Mem { quota } | TierSpec::Disk { quota, .. } => *quota,
        }
    }

    /// `MEM`, `SSD` or `HDD`.
    pub fn medium_name(&self) -> &'static str {
        match self {
            TierSpec::Mem { .. } => "MEM",
            TierSpec::Disk { medium, .. } => medium.name(),
        }
    }
}

impl FromStr for TierSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        TierSpec::parse(s)
    }
}

/// The command line form, which [`TierSpec::parse`] reads back.
impl fmt::Display for TierSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TierSpec::Mem { quota } => write!(f, "mem:{}", format_size(*quota)),
            TierSpec::Disk {
                medium,
                dir,
                quota,
                high,
                low,
            } => write!(
                f,
                "{}:{}:{},high={high},low={low}",
                medium.name().to_ascii_lowercase(),
                dir.display(),
                format_size(*quota)
            ),
        }
    }
}

/// Parses a byte size: a plain number is bytes; units `B`, `KiB`, `MiB`, `GiB`, `TiB` (powers
/// of 1024) and `KB`, `MB`, `GB`, `TB` (powers of 1000), case-insensitive, with an optional
/// space; a fraction is allowed with a unit (`1.5GiB`).
pub fn parse_size(s: &str) -> Result<u64> {
    size(s).map_err(|m| Error::invalid("size", m))
}

fn size(s: &str) -> std::result::Result<u64, String> {
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
    fn tiers() {
        assert_eq!(
            TierSpec::parse("mem:2GiB").unwrap(),
            TierSpec::Mem { quota: 2 << 30 }
        );
        assert_eq!(
            TierSpec::parse("MEM:1024").unwrap(),
            TierSpec::Mem { quota: 1024 }
        );
        assert_eq!(
            TierSpec::parse("ssd:/var/cache/fluid:100GiB,high=0.9,low=0.5").unwrap(),
            TierSpec::Disk {
                medium: Medium::Ssd,
                dir: "/var/cache/fluid".into(),
                quota: 100 << 30,
                high: 0.9,
                low: 0.5
            }
        );
        assert_eq!(
            TierSpec::parse("hdd:/path:1TiB").unwrap(),
            TierSpec::disk(Medium::Hdd, "/path", 1 << 40)
        );
        // The size follows the last colon; the directory may hold colons.
        assert_eq!(
            TierSpec::parse("ssd:/a:b/c:1MB,low=0.2").unwrap(),
            TierSpec::Disk {
                medium: Medium::Ssd,
                dir: "/a:b/c".into(),
                quota: 1_000_000,
                high: DEFAULT_HIGH,
                low: 0.2
            }
        );
        // Display gives the command line form back.
        for text in [
            "mem:2GiB",
            "ssd:/var/cache/fluid:100GiB,high=0.95,low=0.7",
            "hdd:/x:1000,high=1,low=0.5",
        ] {
            let spec = TierSpec::parse(text).unwrap();
            assert_eq!(TierSpec::parse(&spec.to_string()).unwrap(), spec);
        }
        assert_eq!(TierSpec::parse("mem:2GiB").unwrap().to_string(), "mem:2GiB");
        assert_eq!(TierSpec::parse("hdd:/p:1GiB").unwrap().medium_name(), "HDD");
    }

    #[test]
    fn tier_errors_name_the_bad_part() {
        for (text, want) in [
            ("ssd:/x:lots", r#"tier "ssd:/x:lots": bad size "lots""#),
            ("mem:lots", r#"tier "mem:lots": bad size "lots""#),
            ("nvme:/x:1GiB", r#"unknown medium "nvme""#),
            ("mem", "expected MEDIUM:SIZE"),
            ("ssd:1GiB", "expected MEDIUM:DIR:SIZE"),
            ("ssd::1GiB", "empty directory"),
            ("mem:/x:1GiB", "only a size"),
            ("mem:0", "quota must be more than 0"),
            ("ssd:/x:0", "quota must be more than 0"),
            ("ssd:/x:1GiB,high=0.5,low=0.7", "0 < low < high <= 1"),
            ("ssd:/x:1GiB,high=1.5", "0 < low < high <= 1"),
            ("ssd:/x:1GiB,low=0", "0 < low < high <= 1"),
            ("ssd:/x:1GiB,low=0.95", "0 < low < high <= 1"),
            ("ssd:/x:1GiB,high=NaN", "0 < low < high <= 1"),
            ("ssd:/x:1GiB,high=much", r#"bad high "much""#),
            ("ssd:/x:1GiB,fast", r#"bad option "fast""#),
            ("ssd:/x:1GiB,mode=fast", r#"unknown option "mode""#),
        ] {
            let err = TierSpec::parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text}: {err}");
            assert!(err.contains(&format!("tier {text:?}")), "{text}: {err}");
        }
    }

    #[test]
    fn validate_specs_built_in_code() {
        assert!(TierSpec::disk(Medium::Ssd, "/x", 1).validate().is_ok());
        let bad = TierSpec::Disk {
            medium: Medium::Ssd,
            dir: "/x".into(),
            quota: 10,
            high: 0.5,
            low: 0.6,
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("0 < low < high <= 1")
        );
        assert!(TierSpec::Mem { quota: 0 }.validate().is_err());
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
