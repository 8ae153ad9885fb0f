//! The current members, as the read path sees them: a fixed list (the `--peers` flag), or a
//! peers file (`--peers-file`) read again whenever it changes (size or modification time),
//! polled. A file that cannot be read or parsed keeps the last good members and says why once
//! per change, so a bad edit never empties the cache cluster.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::list;
use super::owner::{Member, Owners};
use crate::error::Result;
use crate::lock;

/// What identifies a version of the peers file.
type Stamp = Option<(u64, SystemTime)>;

pub struct Membership {
    file: Option<PathBuf>,
    current: Mutex<(Arc<Owners>, Stamp)>,
}

impl Membership {
    /// A fixed list of members.
    pub fn fixed(members: Vec<Member>) -> Self {
        Membership {
            file: None,
            current: Mutex::new((Arc::new(Owners::new(members)), None)),
        }
    }

    /// The members of `file`; it must be readable and valid now.
    pub fn from_file(file: &Path) -> Result<Self> {
        let stamp = stamp(file);
        let members = list::read(file)?;
        Ok(Membership {
            file: Some(file.to_path_buf()),
            current: Mutex::new((Arc::new(Owners::new(members)), stamp)),
        })
    }

    /// The members now.
    pub fn owners(&self) -> Arc<Owners> {
        lock(&self.current).0.clone()
    }

    /// Reads the peers file again if it changed; whether the members changed.
    pub fn refresh(&self) -> bool {
        let Some(file) = &self.file else {
            return false;
        };
        let now = stamp(file);
        if now == lock(&self.current).1 {
            return false;
        }
        let read = list::read(file);
        let mut current = lock(&self.current);
        current.1 = now;
        match read {
            Ok(members) => {
                let owners = Owners::new(members);
                let changed = !owners.members().eq(current.0.members());
                if changed {
                    tracing::info!(
                        members = owners.members().count(),
                        "the peers file {} changed",
                        file.display()
                    );
                    current.0 = Arc::new(owners);
                }
                changed
            }
            Err(e) => {
                tracing::warn!(
                    "{e}; keeping the {} members known",
                    current.0.members().count()
                );
                false
            }
        }
    }

    /// Refreshes every `every` until the process ends.
    pub async fn watch(self: Arc<Self>, every: Duration) {
        if self.file.is_none() {
            return;
        }
        loop {
            tokio::time::sleep(every).await;
            self.refresh();
        }
    }
}

fn stamp(file: &Path) -> Stamp {
    let m = std::fs::metadata(file).ok()?;
    Some((m.len(), m.modified().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(m: &Membership) -> Vec<String> {
        m.owners().members().map(|m| m.name.clone()).collect()
    }

    #[test]
    fn a_changed_peers_file_changes_the_members_and_a_bad_one_keeps_them() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("peers");
        std::fs::write(&file, "a tcp://127.0.0.1:1\nb tcp://127.0.0.1:2\n").unwrap();
        let m = Membership::from_file(&file).unwrap();
        assert_eq!(names(&m), ["a", "b"]);
        assert!(!m.refresh(), "unchanged");

        std::fs::write(
            &file,
            "a tcp://127.0.0.1:1\nb tcp://127.0.0.1:2\nc tcp://127.0.0.1:3\n",
        )
        .unwrap();
        assert!(m.refresh());
        assert_eq!(names(&m), ["a", "b", "c"]);

        std::fs::write(&file, "a tcp://127.0.0.1:1\nbroken line here\n").unwrap();
        assert!(!m.refresh());
        assert_eq!(names(&m), ["a", "b", "c"], "the last good members stay");
        std::fs::remove_file(&file).unwrap();
        assert!(!m.refresh());
        assert_eq!(names(&m).len(), 3);

        assert!(
            Membership::from_file(&file).is_err(),
            "must be readable at start"
        );
        let fixed = Membership::fixed(vec![Member {
            name: "x".into(),
            endpoint: "tcp://127.0.0.1:9".into(),
        }]);
        assert!(!fixed.refresh());
        assert_eq!(names(&fixed), ["x"]);
    }
}
