//! Created volumes, persisted in the state directory as one JSON file per volume
//! (`<state-dir>/volumes/<encoded id>.json`, written to a temporary file and renamed, so a
//! crash leaves the old record or the new one, never half of one). All records are loaded at
//! start, so CreateVolume stays idempotent and ListVolumes complete across restarts.
//!
//! ListVolumes paging tokens are made here too: a token names the volume id the next page
//! starts at, so a page is never repeated even when volumes come and go between calls.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The format version written in every record.
const RECORD_VERSION: u32 = 1;
const TOKEN_PREFIX: &str = "v1.";

/// What is kept of one created volume.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeRecord {
    #[serde(default)]
    pub version: u32,
    pub volume_id: String,
    /// The CreateVolume name (the PV name under Kubernetes).
    pub name: String,
    pub capacity_bytes: i64,
    /// The request's parameters that shaped the volume (all but `csi.storage.k8s.io/…`).
    pub parameters: BTreeMap<String, String>,
    /// The namespace the `dataset` parameter was resolved in.
    pub namespace: String,
    /// The volume context handed to the node (nothing secret).
    pub volume_context: BTreeMap<String, String>,
}

#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    volumes: BTreeMap<String, VolumeRecord>,
}

impl Store {
    /// Opens (creating) `<state_dir>/volumes` and loads every record in it.
    pub fn open(state_dir: &Path) -> Result<Store> {
        let dir = state_dir.join("volumes");
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let mut volumes = BTreeMap::new();
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
            let path = entry.path();
            let Some(file) = path
                .file_name()
                .and_then(|f| f.to_str())
                .map(str::to_string)
            else {
                continue;
            };
            if file.starts_with('.') && file.ends_with(".tmp") {
                // A write that a crash interrupted before its rename: the record it was
                // replacing (if any) is still in place.
                let _ = std::fs::remove_file(&path);
                continue;
            }
            if !file.ends_with(".json") {
                continue;
            }
            let record = read_record(&path)?;
            if file_name(&record.volume_id) != file {
                return Err(Error::Record {
                    path,
                    message: format!(
                        "holds volume {:?}, which belongs in {}",
                        record.volume_id,
                        file_name(&record.volume_id)
                    ),
                });
            }
            volumes.insert(record.volume_id.clone(), record);
        }
        Ok(Store { dir, volumes })
    }

    pub fn get(&self, volume_id: &str) -> Option<&VolumeRecord> {
        self.volumes.get(volume_id)
    }

    pub fn len(&self) -> usize {
        self.volumes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.volumes.is_empty()
    }

    /// Writes the record to disk, then keeps it.
    pub fn insert(&mut self, mut record: VolumeRecord) -> Result<()> {
        record.version = RECORD_VERSION;
        let path = self.dir.join(file_name(&record.volume_id));
        // Serializing strings and maps cannot fail.
        let mut json = serde_json::to_vec_pretty(&record).unwrap_or_default();
        json.push(b'\n');
        fluid_volume::atomic::write(&path, &json, 0o600)
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        self.volumes.insert(record.volume_id.clone(), record);
        Ok(())
    }

    /// Removes the record from disk and memory; false when there was none.
    pub fn remove(&mut self, volume_id: &str) -> Result<bool> {
        if !self.volumes.contains_key(volume_id) {
            return Ok(false);
        }
        let path = self.dir.join(file_name(volume_id));
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("removing {}", path.display()), e)),
        }
        sync_dir(&self.dir).map_err(|e| Error::io(format!("syncing {}", self.dir.display()), e))?;
        self.volumes.remove(volume_id);
        Ok(true)
    }

    /// Up to `max` records (all when 0) in volume id order, starting at the first id not
    /// below `start`; and the id the next page starts at, if any remain.
    pub fn page(&self, start: Option<&str>, max: usize) -> (Vec<&VolumeRecord>, Option<String>) {
        let mut iter = match start {
            Some(s) => self
                .volumes
                .range::<str, _>((std::ops::Bound::Included(s), std::ops::Bound::Unbounded)),
            None => self.volumes.range::<str, _>(..),
        };
        let take = if max == 0 { usize::MAX } else { max };
        let page: Vec<&VolumeRecord> = iter.by_ref().take(take).map(|(_, r)| r).collect();
        let next = iter.next().map(|(id, _)| id.clone());
        (page, next)
    }
}

fn read_record(path: &Path) -> Result<VolumeRecord> {
    let bytes =
        std::fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Record {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// The record file of a volume id: `[A-Za-z0-9_-]` kept, every other byte as `%XX`, then
/// `.json`. Distinct ids give distinct names, and no name starts with `.` or holds `/`.
pub fn file_name(volume_id: &str) -> String {
    let mut out = String::with_capacity(volume_id.len() + 5);
    for b in volume_id.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out.push_str(".json");
    out
}

/// The ListVolumes token for a page starting at `volume_id`.
pub fn encode_token(volume_id: &str) -> String {
    let mut t = String::from(TOKEN_PREFIX);
    for b in volume_id.bytes() {
        t.push_str(&format!("{b:02x}"));
    }
    t
}

/// The volume id a token from [`encode_token`] starts at; anything else is a bad token.
pub fn decode_token(token: &str) -> Result<String> {
    let bad = || Error::BadToken(token.to_string());
    let hex = token.strip_prefix(TOKEN_PREFIX).ok_or_else(bad)?;
    if hex.is_empty() || hex.len() % 2 != 0 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|_| bad()))
        .collect::<Result<Vec<u8>>>()?;
    String::from_utf8(bytes).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> VolumeRecord {
        VolumeRecord {
            version: 0,
            volume_id: id.to_string(),
            name: format!("name-of-{id}"),
            capacity_bytes: 1 << 30,
            parameters: BTreeMap::from([("dataset".to_string(), "imagenet".to_string())]),
            namespace: "ml".into(),
            volume_context: BTreeMap::from([(
                "fluid.io/dataset".to_string(),
                "ml/imagenet".to_string(),
            )]),
        }
    }

    #[test]
    fn round_trips_through_the_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        assert!(s.is_empty());
        s.insert(record("fluid-b")).unwrap();
        s.insert(record("fluid-a")).unwrap();
        s.insert(record("odd/id with.dots")).unwrap();
        // A leftover of an interrupted write and an unrelated file are ignored.
        std::fs::write(dir.path().join("volumes/.fluid-c.json.tmp"), b"{").unwrap();
        std::fs::write(dir.path().join("volumes/README"), b"x").unwrap();
        let again = Store::open(dir.path()).unwrap();
        assert_eq!(again.len(), 3);
        let mut expected = record("fluid-a");
        expected.version = RECORD_VERSION;
        assert_eq!(again.get("fluid-a"), Some(&expected));
        assert!(again.get("odd/id with.dots").is_some());
        assert!(!dir.path().join("volumes/.fluid-c.json.tmp").exists());

        let mut s = again;
        assert!(s.remove("fluid-a").unwrap());
        assert!(!s.remove("fluid-a").unwrap());
        assert_eq!(Store::open(dir.path()).unwrap().len(), 2);
    }

    #[test]
    fn refuses_a_corrupt_or_misplaced_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        s.insert(record("fluid-a")).unwrap();
        std::fs::rename(
            dir.path().join("volumes/fluid-a.json"),
            dir.path().join("volumes/fluid-x.json"),
        )
        .unwrap();
        let e = Store::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("fluid-x.json"), "{e}");
        std::fs::write(dir.path().join("volumes/fluid-x.json"), b"{not json").unwrap();
        let e = Store::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("fluid-x.json"), "{e}");
    }

    #[test]
    fn file_names_are_safe_and_distinct() {
        assert_eq!(file_name("fluid-0a1b-x_y"), "fluid-0a1b-x_y.json");
        assert_eq!(file_name("../a"), "%2E%2E%2Fa.json");
        assert_ne!(file_name("a.b"), file_name("a%2Eb"));
        assert!(!file_name(".hidden").starts_with('.'));
    }

    #[test]
    fn pages_with_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        for id in ["v1", "v2", "v3", "v4", "v5"] {
            s.insert(record(id)).unwrap();
        }
        let ids = |p: &[&VolumeRecord]| p.iter().map(|r| r.volume_id.clone()).collect::<Vec<_>>();
        let (p, next) = s.page(None, 2);
        assert_eq!(ids(&p), ["v1", "v2"]);
        let token = encode_token(next.as_deref().unwrap());
        let start = decode_token(&token).unwrap();
        assert_eq!(start, "v3");
        // The volume a token names was deleted: the page starts at the next one.
        s.remove("v3").unwrap();
        let (p, next) = s.page(Some(&start), 2);
        assert_eq!(ids(&p), ["v4", "v5"]);
        assert_eq!(next, None);
        let (p, next) = s.page(None, 0);
        assert_eq!((p.len(), next), (4, None));
        for bad in ["", "invalid-token", "v1.", "v1.abc", "v1.zz", "v1.ff"] {
            assert!(
                matches!(decode_token(bad), Err(Error::BadToken(_))),
                "{bad:?}"
            );
        }
        assert_eq!(decode_token(&encode_token("fluid-ü")).unwrap(), "fluid-ü");
    }
}
