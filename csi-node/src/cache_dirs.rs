//! Which Dataset each per-volume disk cache folder belongs to, kept in the state directory
//! (`.cache-dirs.json`, a name no volume folder can have). A volume's disk cache outlives its
//! NodeUnstage, so that staging it again finds the cache warm; the folders of a Dataset go
//! when the controller releases it (its CacheRuntime or the Dataset was deleted), including
//! those of volumes unstaged long before.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::Result;
use crate::state::{remove_dir, write_json};

const FILE: &str = ".cache-dirs.json";

pub struct CacheDirs {
    path: PathBuf,
    /// Folder -> `namespace/name` of its Dataset.
    dirs: Mutex<BTreeMap<PathBuf, String>>,
}

impl CacheDirs {
    /// Loads the list kept in `state_root`; an unreadable one is started afresh (the folders it
    /// named are then left on disk, which is logged).
    pub fn open(state_root: &Path) -> CacheDirs {
        let path = state_root.join(FILE);
        let dirs = match std::fs::read(&path) {
            Ok(text) => serde_json::from_slice(&text).unwrap_or_else(|e| {
                tracing::warn!("{}: unreadable ({e}); starting a new list", path.display());
                BTreeMap::new()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                tracing::warn!("{}: {e}; starting a new list", path.display());
                BTreeMap::new()
            }
        };
        CacheDirs {
            path,
            dirs: Mutex::new(dirs),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<PathBuf, String>> {
        self.dirs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes that `dirs` hold the cache of `dataset`.
    pub fn record(&self, dataset: &str, dirs: &[PathBuf]) -> Result<()> {
        let mut map = self.lock();
        let before = map.len();
        for d in dirs {
            map.insert(d.clone(), dataset.to_string());
        }
        if map.len() == before {
            return Ok(());
        }
        self.save(&map)
    }

    /// Removes the folders of `dataset` except those `keep` says (of volumes still staged)
    /// and forgets them; returns how many went.
    pub fn remove_dataset(&self, dataset: &str, keep: impl Fn(&Path) -> bool) -> Result<usize> {
        let mut map = self.lock();
        let doomed: Vec<PathBuf> = map
            .iter()
            .filter(|(d, ds)| ds.as_str() == dataset && !keep(d))
            .map(|(d, _)| d.clone())
            .collect();
        let mut failed = None;
        for d in &doomed {
            match remove_dir(d) {
                Ok(()) => {
                    map.remove(d);
                }
                Err(e) => failed = Some(e),
            }
        }
        self.save(&map)?;
        match failed {
            Some(e) => Err(e),
            None => Ok(doomed.len()),
        }
    }

    /// Removes `dirs` (a released volume's, at its NodeUnstage) and forgets them.
    pub fn remove(&self, dirs: &[PathBuf]) -> Result<()> {
        let mut map = self.lock();
        for d in dirs {
            remove_dir(d)?;
            map.remove(d);
        }
        self.save(&map)
    }

    fn save(&self, map: &BTreeMap<PathBuf, String>) -> Result<()> {
        write_json(&self.path, map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_datasets_folders_go_except_those_in_use() {
        let state = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        let dir = |n: &str| {
            let d = cache.path().join(n);
            std::fs::create_dir_all(d.join("blocks")).unwrap();
            d
        };
        let (a1, a2, b1) = (dir("a1"), dir("a2"), dir("b1"));
        let dirs = CacheDirs::open(state.path());
        dirs.record("ml/a", &[a1.clone(), a2.clone()]).unwrap();
        dirs.record("ml/b", std::slice::from_ref(&b1)).unwrap();

        // The list survives a restart of the plugin.
        let dirs = CacheDirs::open(state.path());
        assert_eq!(dirs.remove_dataset("ml/a", |d| d == a2).unwrap(), 1);
        assert!(!a1.exists() && a2.exists() && b1.exists());
        dirs.remove(std::slice::from_ref(&a2)).unwrap();
        assert!(!a2.exists());
        assert_eq!(dirs.remove_dataset("ml/a", |_| false).unwrap(), 0);
        assert_eq!(dirs.remove_dataset("ml/b", |_| false).unwrap(), 1);
        assert!(!b1.exists());
        assert!(CacheDirs::open(state.path()).lock().is_empty());
    }
}
