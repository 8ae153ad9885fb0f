//! A POSIX directory as a source: the embedded default and the test oracle.
//!
//! Every path is resolved beneath the root and only beneath it: `openat2` with
//! `RESOLVE_BENEATH` (Linux 5.6+) fails a path that a `..`, an absolute symlink or a symlink
//! leading out of the root would take elsewhere, so a symlink inside a tenant's directory
//! cannot show the node's files through a mount served by root. On older kernels the resolved
//! path is checked to lie under the root instead (racy against a concurrent rename, hence the
//! kernel's way first). The root itself is opened once, when the source is made: paths resolve
//! beneath that directory as it was then, so a root (or a folder above it) swapped for a symlink
//! after the node plugin checked it leads nowhere else.

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use bytes::Bytes;

use crate::BlockBuf;
use crate::{Entry, Kind, Meta, Page, Source, check_relative, join};
use crate::{Error, Result};

/// Entries a listing page returns, so huge directories stream.
const PAGE_SIZE: usize = 1000;

/// Set once `openat2` answered ENOSYS: the kernel predates it (Linux < 5.6).
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

pub struct LocalSource {
    root: Root,
    name: String,
}

impl LocalSource {
    pub fn new(root: PathBuf, url: &str) -> Self {
        LocalSource {
            root: Root::open(root),
            name: url.to_string(),
        }
    }

    fn err(&self, path: &str, e: std::io::Error) -> Error {
        local_error(&self.name, path, e)
    }
}

/// How an I/O error of `path` under the source `name` reads.
fn local_error(name: &str, path: &str, e: std::io::Error) -> Error {
    match (e.kind(), e.raw_os_error()) {
        (std::io::ErrorKind::NotFound, _) => Error::NotFound(format!("{name}/{path}")),
        (_, Some(libc::EXDEV)) => Error::Denied {
            source_name: name.to_string(),
            message: format!("{path}: leads out of the mount's root (a symlink or ..)"),
        },
        (std::io::ErrorKind::PermissionDenied, _) => Error::Denied {
            source_name: name.to_string(),
            message: format!("{path}: {e}"),
        },
        _ => Error::io(format!("{name}/{path}"), e),
    }
}

/// The source's root directory: its path, and the directory opened when the source was made
/// (none when it could not be opened then: it is opened by path at each use instead, and the
/// error, if any, is the use's).
#[derive(Clone)]
struct Root {
    path: PathBuf,
    dir: Option<Arc<OwnedFd>>,
}

impl Root {
    fn open(path: PathBuf) -> Root {
        let dir = open_dir(&path).ok().map(Arc::new);
        Root { path, dir }
    }
}

/// `path` as an `O_PATH` directory descriptor.
fn open_dir(path: &Path) -> std::io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: opens a directory by a NUL-terminated path; the descriptor is owned below.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens `path` (relative, checked) beneath `root` with `flags`, never resolving outside it.
fn open_beneath(root: &Root, path: &str, flags: libc::c_int) -> std::io::Result<File> {
    let flags = flags | libc::O_CLOEXEC;
    let rel = if path.is_empty() { "." } else { path };
    let rel_c = CString::new(rel).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    if !NO_OPENAT2.load(Ordering::Relaxed) {
        let opened_now;
        let dir = match &root.dir {
            Some(dir) => dir.as_ref(),
            None => {
                opened_now = open_dir(&root.path)?;
                &opened_now
            }
        };
        // SAFETY: open_how is plain data; zeroed is its documented default.
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = flags as u64;
        how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
        // SAFETY: openat2 with a live directory fd, a NUL-terminated path and the size of the
        // struct passed.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                rel_c.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd >= 0 {
            // SAFETY: the kernel handed us this new descriptor.
            return Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd as i32) }));
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ENOSYS) {
            return Err(e);
        }
        NO_OPENAT2.store(true, Ordering::Relaxed);
    }
    // Before Linux 5.6: resolve, then check the result lies under the root.
    let full = root.path.join(rel);
    let real = std::fs::canonicalize(&full)?;
    if !real.starts_with(std::fs::canonicalize(&root.path)?) {
        return Err(std::io::Error::from_raw_os_error(libc::EXDEV));
    }
    let real_c = CString::new(real.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: opens a NUL-terminated path; the descriptor is owned below.
    let fd = unsafe { libc::open(real_c.as_ptr(), flags) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel handed us this new descriptor.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// The attributes of `path` beneath `root` (following symlinks that stay beneath it).
fn stat_beneath(root: &Root, path: &str) -> std::io::Result<std::fs::Metadata> {
    open_beneath(root, path, libc::O_PATH)?.metadata()
}

fn meta_of(m: &std::fs::Metadata) -> Meta {
    let mtime = m.modified().unwrap_or(std::time::UNIX_EPOCH);
    if m.is_dir() {
        Meta::dir(mtime)
    } else {
        Meta {
            kind: Kind::File,
            size: m.len(),
            mtime,
            etag: None,
        }
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::io("local source task", std::io::Error::other(e)))?
}

#[async_trait]
impl Source for LocalSource {
    fn name(&self) -> &str {
        &self.name
    }

    async fn stat(&self, path: &str) -> Result<Option<Meta>> {
        check_relative(path)?;
        match stat_beneath(&self.root, path) {
            Ok(m) => Ok(Some(meta_of(&m))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => Ok(None),
            Err(e) => Err(self.err(path, e)),
        }
    }

    async fn list(&self, dir: &str, token: Option<String>) -> Result<Page> {
        check_relative(dir)?;
        let after = token.unwrap_or_default();
        let name = self.name.clone();
        let root = self.root.clone();
        let dir_s = dir.to_string();
        let res = blocking(move || {
            let opened = open_beneath(&root, &dir_s, libc::O_RDONLY | libc::O_DIRECTORY)
                .map_err(|e| Error::io(format!("{name}/{dir_s}"), e))?;
            // The listing reads the directory this descriptor holds (already resolved beneath
            // the root), through its /proc entry.
            let handle = format!("/proc/self/fd/{}", opened.as_raw_fd());
            // Sorted names make the token (the last name returned) a stable resume point.
            let mut names: Vec<String> = std::fs::read_dir(&handle)
                .map_err(|e| Error::io(format!("{name}/{dir_s}"), e))?
                .filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.as_str() > after.as_str())
                .collect();
            names.sort_unstable();
            let more = names.len() > PAGE_SIZE;
            names.truncate(PAGE_SIZE);
            let mut entries = Vec::with_capacity(names.len());
            for n in names {
                // An entry removed between readdir and stat is simply skipped, and so is a
                // symlink leading out of the root.
                if let Ok(m) = stat_beneath(&root, &join(&dir_s, &n)) {
                    entries.push(Entry {
                        name: n,
                        meta: meta_of(&m),
                    });
                }
            }
            let next = if more {
                entries.last().map(|e| e.name.clone())
            } else {
                None
            };
            Ok(Page { entries, next })
        })
        .await;
        res.map_err(|e| match e {
            Error::Io { source, .. } => self.err(dir, source),
            other => other,
        })
    }

    async fn read_into(
        &self,
        path: &str,
        meta: &Meta,
        offset: u64,
        buf: &mut BlockBuf,
    ) -> Result<()> {
        check_relative(path)?;
        let (root, rel) = (self.root.clone(), path.to_string());
        let name = self.name.clone();
        let expect = meta.clone();
        let len = buf.capacity();
        // The blocking read cannot borrow `buf` (a timed-out try would leave it lent), so it
        // reads into memory of its own and this copies: local files are the demo and test
        // source, not the fast path.
        let data = blocking(move || read_range(&root, &rel, &expect, offset, len, &name)).await?;
        buf.clear();
        buf.push(&data);
        Ok(())
    }
}

fn read_range(
    root: &Root,
    path: &str,
    expect: &Meta,
    offset: u64,
    len: usize,
    name: &str,
) -> Result<Bytes> {
    let shown = &format!("{name}/{path}");
    let mut f = open_beneath(root, path, libc::O_RDONLY).map_err(|e| local_error(name, path, e))?;
    let now = meta_of(&f.metadata().map_err(|e| Error::io(shown, e))?);
    if now.size != expect.size || now.mtime != expect.mtime {
        return Err(Error::Changed(shown.to_string()));
    }
    let len = (len as u64).min(now.size.saturating_sub(offset)) as usize;
    let mut buf = BlockBuf::new(len);
    f.seek(SeekFrom::Start(offset))
        .map_err(|e| Error::io(shown, e))?;
    f.read_exact(buf.as_mut_slice())
        .map_err(|e| Error::io(shown, e))?;
    buf.set_filled(len);
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// root/{a.txt, in -> a.txt, abs -> (absolute) outside.txt, up -> ../outside.txt,
    /// sub/{parent -> .., esc -> ../../outside.txt}}, and outside.txt beside root.
    fn tree() -> (tempfile::TempDir, LocalSource) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("a.txt"), b"inside").unwrap();
        std::fs::write(dir.path().join("outside.txt"), b"host secret").unwrap();
        std::os::unix::fs::symlink("a.txt", root.join("in")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("outside.txt"), root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../outside.txt", root.join("up")).unwrap();
        std::os::unix::fs::symlink("..", root.join("sub/parent")).unwrap();
        std::os::unix::fs::symlink("../../outside.txt", root.join("sub/esc")).unwrap();
        let src = LocalSource::new(root, "local:///root");
        (dir, src)
    }

    async fn read_all(src: &LocalSource, path: &str) -> Result<Vec<u8>> {
        let meta = src.stat(path).await?.ok_or(Error::NotFound(path.into()))?;
        let mut buf = BlockBuf::new(meta.size as usize);
        src.read_into(path, &meta, 0, &mut buf).await?;
        Ok(buf.as_ref().to_vec())
    }

    /// The names of the root's first listing page.
    async fn names(src: &LocalSource) -> Vec<String> {
        let page = src.list("", None).await.unwrap();
        page.entries.into_iter().map(|e| e.name).collect()
    }

    #[tokio::test]
    async fn symlinks_inside_the_root_work() {
        let (_dir, src) = tree();
        assert_eq!(read_all(&src, "in").await.unwrap(), b"inside");
        assert_eq!(src.stat("sub").await.unwrap().unwrap().kind, Kind::Dir);
        // `..` by a symlink is fine while it stays beneath the root.
        assert_eq!(read_all(&src, "sub/parent/a.txt").await.unwrap(), b"inside");
    }

    #[tokio::test]
    async fn nothing_outside_the_root_is_reached_through_a_symlink() {
        let (_dir, src) = tree();
        for path in [
            "abs",
            "up",
            "sub/esc",
            "sub/parent/up",
            "sub/parent/sub/esc",
        ] {
            let err = src.stat(path).await.unwrap_err();
            assert!(
                matches!(&err, Error::Denied { message, .. } if message.contains("out of the mount's root")),
                "{path}: {err}"
            );
        }
        assert!(read_all(&src, "up").await.is_err());
        assert!(read_all(&src, "sub/esc").await.is_err());
        // A listing shows the names, but not what lies outside: the escaping links are left out.
        assert_eq!(names(&src).await, ["a.txt", "in", "sub"]);
        // `..` in the path itself never gets that far.
        assert!(matches!(
            src.stat("../outside.txt").await,
            Err(Error::Invalid { .. })
        ));
    }

    /// The root swapped for a symlink to elsewhere after the source was made (after the node
    /// plugin checked the path) leads nowhere else: reads stay in the directory opened then.
    #[tokio::test]
    async fn a_root_swapped_for_a_symlink_later_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let (root, other) = (dir.path().join("root"), dir.path().join("other"));
        std::fs::create_dir(&root).unwrap();
        std::fs::create_dir(&other).unwrap();
        std::fs::write(root.join("f"), b"checked").unwrap();
        std::fs::write(other.join("f"), b"elsewhere").unwrap();
        let src = LocalSource::new(root.clone(), "local:///root");
        std::fs::rename(&root, dir.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(&other, &root).unwrap();
        assert_eq!(read_all(&src, "f").await.unwrap(), b"checked");
        assert_eq!(names(&src).await, ["f"]);
    }
}
