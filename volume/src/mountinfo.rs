//! `/proc/self/mountinfo`: what is mounted where. The daemon watches its own mount point with
//! it; the CSI node plugin finds staging and target mounts with it.

use std::path::{Path, PathBuf};

/// The source (FUSE `fsname`) of `fluid-fuse` mounts; a bind mount of one shows the same.
pub const FLUID_SOURCE: &str = "fluid";

/// One line of `/proc/self/mountinfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    pub id: u32,
    pub parent: u32,
    /// `major:minor` of the mounted file system: equal for a FUSE mount and its bind mounts.
    pub dev: String,
    /// The path inside the mounted file system that sits at the mount point (`/` unless a
    /// bind mount of a sub directory).
    pub root: String,
    pub mount_point: PathBuf,
    /// Per-mount options (`ro`, `nosuid`, ...).
    pub options: String,
    pub fs_type: String,
    pub source: String,
}

impl MountEntry {
    pub fn read_only(&self) -> bool {
        self.options.split(',').any(|o| o == "ro")
    }

    /// A `fluid-fuse` mount or a bind of one: type `fuse` when mounted directly as root (the
    /// kernel then drops the subtype), `fuse.fluid` through fusermount; source `fluid`.
    pub fn is_fluid(&self) -> bool {
        self.source == FLUID_SOURCE && (self.fs_type == "fuse" || self.fs_type == "fuse.fluid")
    }
}

/// Undoes the octal escapes mountinfo writes for space, tab, newline and backslash.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses mountinfo text; malformed lines are skipped.
pub fn parse(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<MountEntry> {
    // id parent major:minor root mount_point options [optional fields...] - fstype source super_options
    let (left, right) = line.split_once(" - ")?;
    let mut l = left.split(' ');
    let id = l.next()?.parse().ok()?;
    let parent = l.next()?.parse().ok()?;
    let dev = l.next()?.to_string();
    let root = unescape(l.next()?);
    let mount_point = PathBuf::from(unescape(l.next()?));
    let options = l.next()?.to_string();
    let mut r = right.split(' ');
    let fs_type = unescape(r.next()?);
    let source = unescape(r.next().unwrap_or(""));
    Some(MountEntry {
        id,
        parent,
        dev,
        root,
        mount_point,
        options,
        fs_type,
        source,
    })
}

/// The mount table of this process's mount namespace.
pub fn read() -> std::io::Result<Vec<MountEntry>> {
    std::fs::read_to_string("/proc/self/mountinfo").map(|t| parse(&t))
}

/// Whether something is mounted exactly at `path` (an absolute, normalized path).
pub fn is_mounted(path: &Path) -> std::io::Result<bool> {
    Ok(read()?.iter().any(|m| m.mount_point == path))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
43 22 0:40 / /var/lib/kubelet/plugins/fluid/globalmount ro,nosuid,nodev,relatime shared:5 - fuse.fluid fluid ro,user_id=0,group_id=0,allow_other
44 22 0:40 /train /var/lib/kubelet/pods/p/volumes/x/with\\040space ro,nosuid,nodev,relatime - fuse fluid ro,user_id=0
45 22 0:41 / /tmp rw - tmpfs tmpfs rw
46 22 0:42 / /mnt/other rw - fuse s3fs rw
garbage line
";

    #[test]
    fn parses_mountinfo() {
        let m = parse(SAMPLE);
        assert_eq!(m.len(), 5);
        assert!(m[2].is_fluid() && !m[4].is_fluid());
        assert_eq!(
            m[1].mount_point,
            PathBuf::from("/var/lib/kubelet/plugins/fluid/globalmount")
        );
        assert!(m[1].is_fluid() && m[1].read_only());
        assert_eq!(m[2].root, "/train");
        assert_eq!(
            m[2].mount_point,
            PathBuf::from("/var/lib/kubelet/pods/p/volumes/x/with space")
        );
        assert!(!m[3].is_fluid() && !m[3].read_only());
        assert_eq!(m[3].source, "tmpfs");
    }

    #[test]
    fn unescapes() {
        assert_eq!(unescape("a\\040b\\134c\\011"), "a b\\c\t");
        assert_eq!(unescape("trailing\\"), "trailing\\");
        assert_eq!(unescape("\\04"), "\\04");
    }
}
