//! What the node's administrator allows a tenant's volume to do on this node. A volume context
//! is written by whoever may create a Dataset or a StorageClass parameter; the daemons act on
//! it as root, so everything in it that touches the node is checked here, at NodeStage.
//!
//! `local://` mount points: a daemon serving one reads the node's own files as root and shows
//! them to the tenant's pods (the kubelet's pod volumes, service-account tokens, Secrets). So
//! a local root must lie under a directory the administrator listed (`--local-roots`), after
//! resolving symlinks; none is listed by default. The local source then never resolves a path
//! out of its root (`openat2` with `RESOLVE_BENEATH`).

use std::path::{Path, PathBuf};

use fluid_volume::dataset::Mount;
use fluid_volume::mountpoint::Store;

use crate::error::{Error, Result};

/// Refuses any `local://` mount whose directory is not under one of `allowed`.
pub fn check_local_roots(mounts: &[Mount], allowed: &[PathBuf]) -> Result<()> {
    for m in mounts {
        let Store::Local { root } = &m.mount_point.store else {
            continue;
        };
        let url = &m.mount_point.url;
        if allowed.is_empty() {
            return Err(Error::Denied(format!(
                "{url}: local:// mount points are not allowed on this node (the administrator \
                 lists the directories they may use with --local-roots / the chart's \
                 node.localRoots)"
            )));
        }
        let real = std::fs::canonicalize(root)
            .map_err(|e| Error::invalid("mountPoint", format!("{url}: {e}")))?;
        if !allowed.iter().any(|a| under(&real, a)) {
            let list: Vec<String> = allowed.iter().map(|a| a.display().to_string()).collect();
            return Err(Error::Denied(format!(
                "{url}: {} is not under a directory allowed for local:// mount points ({})",
                real.display(),
                list.join(", ")
            )));
        }
    }
    Ok(())
}

/// Whether `path` (resolved) lies at or under `root` once `root`'s own links are resolved.
fn under(path: &Path, root: &Path) -> bool {
    std::fs::canonicalize(root).is_ok_and(|r| path.starts_with(r))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fluid_volume::dataset::{MountSpec, resolve};

    fn mounts(url: &str) -> Vec<Mount> {
        let spec = MountSpec {
            mount_point: url.into(),
            name: "m".into(),
            ..Default::default()
        };
        resolve(vec![spec], "mounts").unwrap()
    }

    #[test]
    fn local_roots_must_lie_under_an_allowed_directory() {
        let dir = tempfile::tempdir().unwrap();
        let allowed = dir.path().join("data");
        std::fs::create_dir_all(allowed.join("set")).unwrap();
        std::os::unix::fs::symlink("/var", allowed.join("out")).unwrap();
        let inside = format!("local://{}/set", allowed.display());
        let via_link = format!("local://{}/out", allowed.display());
        let host = "local:///var/lib/kubelet/pods";

        // Nothing allowed: every local:// mount is refused, naming the flag.
        let err = check_local_roots(&mounts(&inside), &[]).unwrap_err();
        assert!(
            matches!(&err, Error::Denied(m) if m.contains("--local-roots")),
            "{err}"
        );
        let ok = [allowed.clone()];
        check_local_roots(&mounts(&inside), &ok).unwrap();
        for url in [host, via_link.as_str(), "local:///proc/1/root"] {
            let err = check_local_roots(&mounts(url), &ok).unwrap_err();
            assert!(
                matches!(err, Error::Denied(_) | Error::Invalid { .. }),
                "{url}: {err}"
            );
        }
        // Other stores are not this check's business.
        check_local_roots(&mounts("s3://bucket/x"), &[]).unwrap();
    }
}
