//! Bind mounts, read-only remounts and unmounts through mount(2)/umount2(2), and
//! `/proc/self/mountinfo` parsing to tell whether (and what) a path is a mount point.
//!
//! Every function here makes blocking system calls, and a `stat` of a path on a wedged FUSE
//! mount can block for long: async callers run them on the blocking pool.

use std::ffi::CString;
use std::io;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};

pub use fluid_volume::mountinfo::MountEntry;

pub fn read_mountinfo() -> Result<Vec<MountEntry>> {
    fluid_volume::mountinfo::read().map_err(|e| Error::io("reading /proc/self/mountinfo", e))
}

/// The mounts whose mount point is exactly `path`, bottom first (stacked mounts follow their
/// parent in mountinfo order).
pub fn mounts_at(path: &Path) -> Result<Vec<MountEntry>> {
    let path = normalize(path);
    Ok(read_mountinfo()?
        .into_iter()
        .filter(|m| m.mount_point == path)
        .collect())
}

/// The top-most mount at `path`, if `path` is a mount point.
pub fn mount_at(path: &Path) -> Result<Option<MountEntry>> {
    Ok(mounts_at(path)?.pop())
}

pub fn is_mount_point(path: &Path) -> Result<bool> {
    Ok(!mounts_at(path)?.is_empty())
}

/// What a `stat` of a path says.
#[derive(Debug, PartialEq, Eq)]
pub enum PathState {
    Missing,
    Directory,
    /// Exists but is not a directory.
    Other,
    /// A FUSE mount whose daemon is gone (ENOTCONN).
    Dead,
    Error(io::ErrorKind, String),
}

pub fn probe(path: &Path) -> PathState {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => PathState::Directory,
        Ok(_) => PathState::Other,
        Err(e) if e.kind() == io::ErrorKind::NotFound => PathState::Missing,
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => PathState::Dead,
        Err(e) => PathState::Error(e.kind(), e.to_string()),
    }
}

/// An absolute path with `.`, `..` and repeated or trailing slashes removed lexically (no
/// symlinks are followed: a dead FUSE mount cannot be `stat`ed).
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::RootDir => out.push("/"),
            Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
        }
    }
    out
}

fn cpath(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| Error::invalid("path", format!("{} contains a NUL byte", path.display())))
}

fn sys_mount(src: Option<&CString>, dst: &CString, flags: libc::c_ulong) -> io::Result<()> {
    let fstype = c"none";
    // SAFETY: every pointer is a valid NUL-terminated string or NULL for the call's duration.
    let rc = unsafe {
        libc::mount(
            src.map_or(std::ptr::null(), |s| s.as_ptr()),
            dst.as_ptr(),
            fstype.as_ptr(),
            flags,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn sys_umount(path: &CString, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: path is a valid NUL-terminated string for the call's duration.
    if unsafe { libc::umount2(path.as_ptr(), flags) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Bind-mounts `src` at `dst` (both existing directories), then remounts it read-only when
/// asked. On a failed remount the bind is undone, so a writable mount never stays behind.
pub fn bind(src: &Path, dst: &Path, read_only: bool) -> Result<()> {
    let (s, d) = (cpath(src)?, cpath(dst)?);
    sys_mount(Some(&s), &d, libc::MS_BIND)
        .map_err(|e| Error::mount("bind-mounting onto", dst, e))?;
    if read_only {
        let flags =
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV;
        if let Err(e) = sys_mount(None, &d, flags) {
            let _ = sys_umount(&d, libc::MNT_DETACH);
            return Err(Error::mount("remounting read-only", dst, e));
        }
    }
    Ok(())
}

/// Unmounts everything mounted at `path` (stacked mounts too): a normal unmount first, a lazy
/// one (MNT_DETACH) when the mount is busy or its FUSE daemon is gone. Nothing mounted, or a
/// path that does not exist, is success.
pub fn unmount_all(path: &Path) -> Result<()> {
    let c = cpath(path)?;
    // Bounded: each round removes one mount or fails.
    for _ in 0..32 {
        if !is_mount_point(path)? {
            return Ok(());
        }
        match sys_umount(&c, 0) {
            Ok(()) => continue,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOENT)) => {
                // Not a mount point after all (raced with another unmount).
                continue;
            }
            Err(e) => {
                tracing::debug!("unmount {}: {e}; detaching it lazily", path.display());
                match sys_umount(&c, libc::MNT_DETACH) {
                    Ok(()) => continue,
                    Err(e)
                        if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOENT)) =>
                    {
                        continue;
                    }
                    Err(e) => return Err(Error::mount("unmounting", path, e)),
                }
            }
        }
    }
    if is_mount_point(path)? {
        return Err(Error::mount(
            "unmounting",
            path,
            io::Error::other("mounts remain after 32 unmounts"),
        ));
    }
    Ok(())
}

/// Lazily detaches every mount at `path` at once (for dead FUSE mounts, whose normal unmount
/// may hang or fail).
pub fn detach_all(path: &Path) -> Result<()> {
    let c = cpath(path)?;
    for _ in 0..32 {
        if !is_mount_point(path)? {
            return Ok(());
        }
        match sys_umount(&c, libc::MNT_DETACH) {
            Ok(()) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOENT)) => {}
            Err(e) => return Err(Error::mount("detaching", path, e)),
        }
    }
    Ok(())
}

/// Lazily detaches the `fluid-fuse` mounts on top of `path` (a dead one left by a killed
/// daemon, or an orphan's), so a new daemon never stacks on them. Other mounts are left alone.
pub fn detach_fluid(path: &Path) -> Result<()> {
    let c = cpath(path)?;
    for _ in 0..32 {
        match mount_at(path)? {
            Some(m) if m.is_fluid() => match sys_umount(&c, libc::MNT_DETACH) {
                Ok(()) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOENT)) => {}
                Err(e) => return Err(Error::mount("detaching", path, e)),
            },
            _ => return Ok(()),
        }
    }
    Ok(())
}

/// Runs blocking file system or mount work on the blocking pool, bounded in time: a stat on a
/// wedged FUSE mount must not hang a CSI call forever (the thread is left to finish).
pub async fn run_blocking<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    match tokio::time::timeout(BLOCKING_TIMEOUT, tokio::task::spawn_blocking(f)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(Error::Daemon(format!("{what}: worker failed: {e}"))),
        Err(_) => Err(Error::Unavailable(format!(
            "{what}: no answer within {} s (is the FUSE mount hung?)",
            BLOCKING_TIMEOUT.as_secs()
        ))),
    }
}

const BLOCKING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Removes a target directory (or file) left after unmounting; a missing one is fine.
pub fn remove_target(path: &Path) -> Result<()> {
    let r = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
    };
    match r {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("removing {}", path.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_lexically() {
        assert_eq!(
            normalize(Path::new("/a//b/./c/../d/")),
            PathBuf::from("/a/b/d")
        );
        assert_eq!(normalize(Path::new("/")), PathBuf::from("/"));
    }

    #[test]
    fn real_mountinfo_has_the_root() {
        assert!(is_mount_point(Path::new("/")).unwrap());
        assert!(!is_mount_point(Path::new("/nonexistent/fluid/x")).unwrap());
        assert_eq!(probe(Path::new("/nonexistent/fluid/x")), PathState::Missing);
        assert_eq!(probe(Path::new("/")), PathState::Directory);
    }

    /// Needs root (CAP_SYS_ADMIN), as the plugin itself does.
    #[test]
    fn binds_read_only_and_unmounts() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
        std::fs::create_dir(&src).unwrap();
        std::fs::create_dir(&dst).unwrap();
        std::fs::write(src.join("f"), b"x").unwrap();
        bind(&src, &dst, true).unwrap();
        let m = mount_at(&dst).unwrap().expect("mounted");
        assert!(m.read_only(), "{m:?}");
        assert_eq!(std::fs::read(dst.join("f")).unwrap(), b"x");
        assert!(
            std::fs::write(dst.join("g"), b"y").is_err(),
            "read-only bind"
        );
        // Stack a second one: unmount_all removes both.
        bind(&src, &dst, false).unwrap();
        assert_eq!(mounts_at(&dst).unwrap().len(), 2);
        unmount_all(&dst).unwrap();
        assert!(!is_mount_point(&dst).unwrap());
        remove_target(&dst).unwrap();
        assert!(!dst.exists());
    }

    #[test]
    fn unmount_of_nothing_and_remove_of_missing_succeed() {
        unmount_all(Path::new("/nonexistent/fluid/x")).unwrap();
        remove_target(Path::new("/nonexistent/fluid/x")).unwrap();
    }
}
