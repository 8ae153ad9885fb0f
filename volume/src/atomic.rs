//! The one way the binaries replace a file they own (volume records, state, the per-volume
//! dataset file with its credentials): a reader, or a restart after a crash, sees the old
//! content or the new, never a part, and the new content is on disk when this returns.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Writes `data` to `path` with permission bits `mode`: into a temporary file beside it,
/// fsynced, renamed over `path`, then the folder fsynced (so the rename survives a crash).
/// On an error the temporary file is removed and `path` is as it was.
pub fn write(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    let tmp = temporary(path);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        match path.parent().filter(|d| !d.as_os_str().is_empty()) {
            Some(dir) => std::fs::File::open(dir)?.sync_all(),
            None => Ok(()),
        }
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// [`write`], unless `path` holds `data` already (a reader that polls its size and time sees
/// no change then); makes the folder when it is missing.
pub fn write_if_changed(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    if std::fs::read(path).is_ok_and(|d| d == data) {
        return Ok(());
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    write(path, data, mode)
}

/// `.<name>.tmp` beside `path`: hidden, and never taken for a file of the folder's own kind.
fn temporary(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writes_only_what_changed_and_makes_the_folder() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new/peers");
        write_if_changed(&path, b"a 1\n", 0o644).unwrap();
        let ino = std::fs::metadata(&path).unwrap().ino();
        write_if_changed(&path, b"a 1\n", 0o644).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().ino(), ino, "left alone");
        write_if_changed(&path, b"a 1\nb 2\n", 0o644).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"a 1\nb 2\n");
        assert_ne!(std::fs::metadata(&path).unwrap().ino(), ino, "replaced");
    }

    #[test]
    fn replaces_whole_with_the_mode_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("record.json");
        write(&path, b"first", 0o600).unwrap();
        write(&path, b"second", 0o600).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["record.json"]);
    }

    #[test]
    fn a_failed_write_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write(&path, b"old", 0o600).unwrap();
        // The temporary's name is taken by a folder: the write fails before the rename.
        std::fs::create_dir(dir.path().join(".f.tmp")).unwrap();
        assert!(write(&path, b"new", 0o600).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
    }
}
