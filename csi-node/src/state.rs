//! The state directory: one folder per staged volume, `<state-dir>/<volume>/`, holding a JSON
//! record (`volume.json`) of what this node did for the volume, so that a restarted plugin
//! adopts running daemons and re-binds targets instead of starting over. The folder also holds
//! the 0600 dataset file (mounts with credentials), the daemon's control socket, ready file and
//! log. Records are replaced atomically (write, fsync, rename, fsync of the folder).

use std::collections::BTreeMap;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use fluid_volume::size::BlockSize;
use fluid_volume::tier::Tiers;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

const RECORD: &str = "volume.json";
/// Longest volume id used verbatim as a folder name; longer or unusual ids are hashed.
const MAX_PLAIN_NAME: usize = 48;

/// One published target of a volume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetRecord {
    pub read_only: bool,
    /// The path inside the dataset that is mounted at the target; none for its root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_path: Option<String>,
}

/// What the node did for one staged volume. Holds no credentials (they live in the dataset
/// file only).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VolumeRecord {
    pub volume_id: String,
    pub staging_path: PathBuf,
    /// The running daemon, if any; with its start time (clock ticks after boot, from
    /// /proc/PID/stat) and the boot id, so that a reused pid is never mistaken for it.
    #[serde(default)]
    pub pid: Option<u32>,
    #[serde(default)]
    pub pid_start: Option<u64>,
    #[serde(default)]
    pub boot_id: Option<String>,
    pub control_socket: PathBuf,
    pub dataset_file: PathBuf,
    pub ready_file: PathBuf,
    pub log_file: PathBuf,
    /// `fluid-fuse --tier` specs, disk tier directories already made per volume.
    pub tiers: Tiers,
    pub block_size: BlockSize,
    /// `namespace/name` of the Dataset, for messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    /// The Dataset's cache must have this node to itself (`placement: Exclusive`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exclusive: bool,
    /// cleanPolicy OnRuntimeDeleted: NodeUnstage parks the volume (its daemon and cache stay)
    /// until the controller releases the Dataset.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep: bool,
    /// A kept volume's folder for its file system while parked: NodeUnstage binds the staging
    /// mount here before unmounting it, so the daemon keeps serving; NodeStage binds it back
    /// and unmounts this one. While staged, the file system is mounted at the staging path
    /// (and the pods' targets) only: the kubelet refuses to unstage a volume whose file system
    /// has any other mount ("still mounted by other references").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_path: Option<PathBuf>,
    /// Unstaged with its daemon kept: `staging_path` is the last one and is not mounted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub parked: bool,
    /// Its Dataset was released while it was in use: its disk cache goes at its NodeUnstage.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub released: bool,
    #[serde(default)]
    pub targets: BTreeMap<PathBuf, TargetRecord>,
    /// SHA-256 of the fluid-fuse binary the daemon serves with: a plugin configured with
    /// another one upgrades the daemon when it adopts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuse_digest: Option<String>,
}

impl VolumeRecord {
    /// The keeper's upgrade socket (`fluid-fuse mount --keeper-socket`), beside the
    /// control socket in the volume's state folder.
    pub fn keeper_socket(&self) -> PathBuf {
        self.control_socket.with_file_name("keeper.sock")
    }

    /// Where the daemon's file system is mounted: the staging path, or the park folder of a
    /// parked volume.
    pub fn daemon_path(&self) -> &Path {
        match (&self.mount_path, self.parked) {
            (Some(park), true) => park,
            _ => &self.staging_path,
        }
    }

    /// The volume's own folders of its disk tiers.
    pub fn disk_dirs(&self) -> Vec<PathBuf> {
        self.tiers.disk_dirs()
    }
}

/// The folder name of a volume: the id itself when it is short and made of `[A-Za-z0-9._-]`
/// (not starting with `.`), else `~` and a hash of it (`~` never appears in a plain name, so
/// the two kinds cannot collide). Short names keep the control socket path under the unix
/// socket limit.
pub fn dir_name(volume_id: &str) -> String {
    let plain = !volume_id.is_empty()
        && volume_id.len() <= MAX_PLAIN_NAME
        && !volume_id.starts_with('.')
        && volume_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if plain {
        volume_id.to_string()
    } else {
        // FNV-1a, 64 bits: stable across builds and platforms.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in volume_id.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        format!("~{h:016x}")
    }
}

/// A folder of the state directory that holds no usable record.
#[derive(Debug)]
pub struct Stale {
    pub dir: PathBuf,
    pub reason: String,
}

#[derive(Clone, Debug)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// Opens (creating, owner-only) the state directory.
    pub fn open(root: &Path) -> Result<StateDir> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .map_err(|e| Error::io(format!("creating state dir {}", root.display()), e))?;
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io(format!("chmod 0700 {}", root.display()), e))?;
        Ok(StateDir {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn volume_dir(&self, volume_id: &str) -> PathBuf {
        self.root.join(dir_name(volume_id))
    }

    /// The peers file of a Dataset (`namespace/name`): the members of its shared cache, which
    /// its daemons read (`fluid-fuse mount --peers-file`).
    pub fn peers_file(&self, dataset: &str) -> PathBuf {
        self.root.join(".peers").join(dir_name(dataset))
    }

    /// A fresh record for a volume about to be staged; its folder is created (0700).
    pub fn new_record(
        &self,
        volume_id: &str,
        staging_path: &Path,
        tiers: Tiers,
        block_size: BlockSize,
        dataset: Option<String>,
    ) -> Result<VolumeRecord> {
        let dir = self.volume_dir(volume_id);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        Ok(VolumeRecord {
            volume_id: volume_id.to_string(),
            staging_path: staging_path.to_path_buf(),
            pid: None,
            pid_start: None,
            boot_id: None,
            control_socket: dir.join("control.sock"),
            dataset_file: dir.join("dataset.yaml"),
            ready_file: dir.join("ready"),
            log_file: dir.join("fluid-fuse.log"),
            tiers,
            block_size,
            dataset,
            exclusive: false,
            keep: false,
            mount_path: None,
            parked: false,
            released: false,
            targets: BTreeMap::new(),
            fuse_digest: None,
        })
    }

    /// Writes the record atomically: a reader (or a restart) sees the old or the new one.
    pub fn save(&self, rec: &VolumeRecord) -> Result<()> {
        write_json(&self.volume_dir(&rec.volume_id).join(RECORD), rec)
    }

    /// Reads every record; folders without a readable, consistent record come back as stale.
    pub fn load_all(&self) -> Result<(Vec<VolumeRecord>, Vec<Stale>)> {
        let mut records = Vec::new();
        let mut stale = Vec::new();
        let entries = std::fs::read_dir(&self.root)
            .map_err(|e| Error::io(format!("reading state dir {}", self.root.display()), e))?;
        for entry in entries {
            let entry = entry
                .map_err(|e| Error::io(format!("reading state dir {}", self.root.display()), e))?;
            let dir = entry.path();
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let file = dir.join(RECORD);
            let text = match std::fs::read(&file) {
                Ok(t) => t,
                Err(e) => {
                    stale.push(Stale {
                        dir,
                        reason: format!("no record: {e}"),
                    });
                    continue;
                }
            };
            match serde_json::from_slice::<VolumeRecord>(&text) {
                Ok(rec) if self.volume_dir(&rec.volume_id) == dir => records.push(rec),
                Ok(rec) => stale.push(Stale {
                    dir,
                    reason: format!("record of volume {:?} in the wrong folder", rec.volume_id),
                }),
                Err(e) => stale.push(Stale {
                    dir,
                    reason: format!("unreadable record: {e}"),
                }),
            }
        }
        records.sort_by(|a, b| a.volume_id.cmp(&b.volume_id));
        Ok((records, stale))
    }

    /// Removes a volume's folder: record, dataset file (credentials), socket, log.
    pub fn remove(&self, volume_id: &str) -> Result<()> {
        remove_dir(&self.volume_dir(volume_id))
    }
}

/// Writes `value` as JSON to `path` (owner-only) atomically: written beside it, synced, renamed
/// over it, and the folder synced.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let state_err = |message: String| Error::State {
        path: path.display().to_string(),
        message,
    };
    let text = serde_json::to_vec_pretty(value).map_err(|e| state_err(e.to_string()))?;
    fluid_volume::atomic::write(path, &text, 0o600).map_err(|e| state_err(e.to_string()))
}

pub fn remove_dir(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("removing {}", dir.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_names_are_safe_and_distinct() {
        assert_eq!(dir_name("pvc-1234-abcd"), "pvc-1234-abcd");
        for odd in ["a/b", "..", ".hidden", "", "x y", &"v".repeat(49), "~1"] {
            let n = dir_name(odd);
            assert!(n.starts_with('~') && n.len() == 17, "{odd:?} -> {n}");
        }
        assert_ne!(dir_name("a/b"), dir_name("a/c"));
        assert_eq!(dir_name("a/b"), dir_name("a/b"));
    }

    #[test]
    fn records_round_trip_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::open(&dir.path().join("state")).unwrap();
        let mode = std::fs::metadata(sd.root()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let mut rec = sd
            .new_record(
                "vol/1",
                Path::new("/stage"),
                Tiers::parse_each(&["mem:1GiB"]).unwrap(),
                BlockSize::DEFAULT,
                None,
            )
            .unwrap();
        rec.pid = Some(42);
        rec.targets.insert(
            "/t1".into(),
            TargetRecord {
                read_only: true,
                sub_path: Some("a/b".into()),
            },
        );
        sd.save(&rec).unwrap();
        sd.save(&rec).unwrap();
        // A folder without a record and one with garbage are stale.
        std::fs::create_dir(sd.root().join("junk")).unwrap();
        std::fs::create_dir(sd.root().join("bad")).unwrap();
        std::fs::write(sd.root().join("bad").join(RECORD), b"{").unwrap();
        let (records, stale) = sd.load_all().unwrap();
        assert_eq!(records, vec![rec.clone()]);
        assert_eq!(stale.len(), 2, "{stale:?}");
        sd.remove("vol/1").unwrap();
        sd.remove("vol/1").unwrap();
        assert!(sd.load_all().unwrap().0.is_empty());
    }
}
