//! Cache tiers (Fluid's `tieredstore.levels`): one tier's spec and the rules on a whole list.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::size::{format_size, size};

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
            // Root makes, fills and removes it: it names one place, read as written.
            if !dir.is_absolute()
                || dir
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                return Err(format!(
                    "directory {} must be an absolute path without '..'",
                    dir.display()
                ));
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

/// An ordered list of tiers, fastest first, that a cache can open: every spec valid, at most
/// one memory tier and only in first place, no directory used by two disk tiers. Empty means no
/// cache (every read goes to the source).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tiers(Vec<TierSpec>);

impl Tiers {
    pub fn new(specs: Vec<TierSpec>) -> Result<Tiers> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            spec.validate()?;
            let refuse = |message: &str| Err(Error::invalid(format!("tier {spec}"), message));
            match spec {
                TierSpec::Mem { .. } if i != 0 => {
                    return refuse(
                        "the memory tier must be the first tier, and there can be only one",
                    );
                }
                TierSpec::Mem { .. } => {}
                TierSpec::Disk { dir, .. } => {
                    let dir = normalize(dir);
                    if dirs.contains(&dir) {
                        return refuse("another tier uses the same directory");
                    }
                    dirs.push(dir);
                }
            }
        }
        Ok(Tiers(specs))
    }

    /// Tiers written one spec each (repeated `--tier` flags).
    pub fn parse_each<S: AsRef<str>>(specs: &[S]) -> Result<Tiers> {
        Tiers::new(
            specs
                .iter()
                .map(|s| TierSpec::parse(s.as_ref()))
                .collect::<Result<_>>()?,
        )
    }

    /// Tiers written as one `;`-separated list (a StorageClass parameter, a volume context
    /// entry); `field` names it in errors. Empty items are skipped; no item at all is refused.
    pub fn parse_list(list: &str, field: &str) -> Result<Tiers> {
        let specs: Vec<&str> = list
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if specs.is_empty() {
            return Err(Error::invalid(
                field,
                "no tier given; e.g. mem:2GiB;ssd:/var/cache/fluid:100GiB",
            ));
        }
        Tiers::parse_each(&specs).map_err(|e| e.in_field(field))
    }

    pub fn specs(&self) -> &[TierSpec] {
        &self.0
    }

    pub fn into_specs(self) -> Vec<TierSpec> {
        self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The same tiers with each disk directory replaced by its subdirectory `name`, so that
    /// the volumes of a node never share a cache directory. The rules still hold: distinct
    /// directories stay distinct.
    pub fn in_subdirectories(&self, name: &str) -> Tiers {
        let mut tiers = self.clone();
        for spec in &mut tiers.0 {
            if let TierSpec::Disk { dir, .. } = spec {
                *dir = dir.join(name);
            }
        }
        tiers
    }

    /// The directories of the disk tiers, in order.
    pub fn disk_dirs(&self) -> Vec<PathBuf> {
        self.0
            .iter()
            .filter_map(|t| match t {
                TierSpec::Disk { dir, .. } => Some(dir.clone()),
                TierSpec::Mem { .. } => None,
            })
            .collect()
    }

    /// Each spec in its command line form.
    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }
}

/// The `;`-separated list form, which [`Tiers::parse_list`] reads back.
impl fmt::Display for Tiers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_strings().join(";"))
    }
}

/// A list of specs in their command line form, as the node plugin's volume records keep it.
impl serde::Serialize for Tiers {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(ToString::to_string))
    }
}

impl<'de> serde::Deserialize<'de> for Tiers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let specs = Vec::<String>::deserialize(d)?;
        Tiers::parse_each(&specs).map_err(serde::de::Error::custom)
    }
}

/// `/a//b/` and `/a/b` name one directory; symbolic links are for the cache to resolve when
/// it opens the tiers on the node.
fn normalize(dir: &Path) -> PathBuf {
    dir.components().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
            ("ssd:/c/../../proc/1/root:1GiB", "without '..'"),
            ("hdd:cache:1GiB", "must be an absolute path"),
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
    fn tier_lists() {
        let tiers = Tiers::parse_list("mem:1GiB; ssd:/a:1GiB;hdd:/b:2GiB;", "t").unwrap();
        assert_eq!(tiers.specs().len(), 3);
        assert_eq!(Tiers::parse_list(&tiers.to_string(), "t").unwrap(), tiers);
        assert_eq!(
            tiers.in_subdirectories("vol").disk_dirs(),
            vec![PathBuf::from("/a/vol"), PathBuf::from("/b/vol")]
        );
        assert!(Tiers::new(Vec::new()).unwrap().is_empty());
        let json = serde_json::to_string(&tiers).unwrap();
        assert_eq!(serde_json::from_str::<Tiers>(&json).unwrap(), tiers);
        assert!(serde_json::from_str::<Tiers>(r#"["ssd:/a:1GiB","mem:1GiB"]"#).is_err());
        for (list, want) in [
            ("ssd:/a:1GiB;mem:1GiB", "the memory tier must be the first"),
            ("mem:1GiB;mem:2GiB", "only one"),
            ("ssd:/a:1GiB;hdd:/a/:2GiB", "same directory"),
            ("ssd:/a//b:1GiB;ssd:/a/b:2GiB", "same directory"),
            ("mem:lots", r#"bad size "lots""#),
            (" ; ", "no tier given"),
        ] {
            let err = Tiers::parse_list(list, "parameters.tiers")
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with("invalid parameters.tiers:"),
                "{list}: {err}"
            );
            assert!(err.contains(want), "{list}: {err}");
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
}
