//! Directories an administrator allows tenants' paths under (local roots, cache roots), and
//! the one test of a path a tenant wrote against them.

use std::path::{Component, Path, PathBuf};

/// Whether `path`, read as written, lies at or under one of `roots`: it has no `..` (which
/// would climb out of the root it starts with) and a root is its prefix. Links inside a root
/// are the administrator's; a caller that must also follow them resolves the path first.
pub fn lies_under(path: &Path, roots: &[PathBuf]) -> bool {
    !path.components().any(|c| matches!(c, Component::ParentDir))
        && roots.iter().any(|r| path.starts_with(r))
}

/// The roots for a message: `a, b`, or `none`.
pub fn describe(roots: &[PathBuf]) -> String {
    if roots.is_empty() {
        return "none".into();
    }
    let list: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
    list.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_under_roots_as_written() {
        let roots = [
            PathBuf::from("/srv/data"),
            PathBuf::from("/var/cache/fluid"),
        ];
        assert!(lies_under(Path::new("/srv/data"), &roots));
        assert!(lies_under(Path::new("/var/cache/fluid/v1/./x"), &roots));
        assert!(!lies_under(Path::new("/srv/data/../../etc"), &roots));
        assert!(!lies_under(Path::new("/srv/database"), &roots));
        assert!(!lies_under(Path::new("/proc/1/root/srv/data"), &roots));
        assert!(!lies_under(Path::new("/srv/data"), &[]));
        assert_eq!(describe(&roots), "/srv/data, /var/cache/fluid");
        assert_eq!(describe(&[]), "none");
    }
}
