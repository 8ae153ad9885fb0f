//! Totals of a source tree (files and bytes), for a Dataset's `ufsTotal` and `fileNum`. The
//! walk lists one directory page at a time and keeps only the directories still to visit, so
//! memory follows the tree's width, not its size.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::Result;
use crate::{Kind, Source, join};

/// Files and bytes counted so far; readable while the walk runs.
#[derive(Debug, Default)]
pub struct Totals {
    pub files: AtomicU64,
    pub bytes: AtomicU64,
}

impl Totals {
    /// (files, bytes) at this instant.
    pub fn get(&self) -> (u64, u64) {
        (
            self.files.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }
}

/// Adds every file under the source's root to `totals`.
pub async fn count(source: &dyn Source, totals: &Totals) -> Result<()> {
    let mut dirs = vec![String::new()];
    while let Some(dir) = dirs.pop() {
        let mut token = None;
        loop {
            let page = source.list(&dir, token).await?;
            for e in page.entries {
                match e.meta.kind {
                    Kind::Dir => dirs.push(join(&dir, &e.name)),
                    Kind::File => {
                        totals.files.fetch_add(1, Ordering::Relaxed);
                        totals.bytes.fetch_add(e.meta.size, Ordering::Relaxed);
                    }
                }
            }
            match page.next {
                Some(t) => token = Some(t),
                None => break,
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::LocalSource;

    #[tokio::test]
    async fn counts_files_and_bytes_of_a_tree() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::create_dir_all(root.join("empty")).unwrap();
        std::fs::write(root.join("top"), vec![0u8; 10]).unwrap();
        std::fs::write(root.join("a/one"), vec![0u8; 100]).unwrap();
        std::fs::write(root.join("a/b/two"), vec![0u8; 1000]).unwrap();
        let src = LocalSource::new(root.to_path_buf(), "local:///t");
        let totals = Totals::default();
        count(&src, &totals).await.unwrap();
        assert_eq!(totals.get(), (3, 1110));
    }
}
