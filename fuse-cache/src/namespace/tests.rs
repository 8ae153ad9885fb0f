//! The namespace over local directories: union of mounts, inode numbers, TTLs, listings.

use super::*;
use fluid_source::local::LocalSource;
use fluid_volume::dataset::{MountSpec, resolve};

fn namespace(dirs: &[(&std::path::Path, &str)], ttl: Ttl) -> Namespace {
    let specs = dirs
        .iter()
        .enumerate()
        .map(|(i, (d, path))| MountSpec {
            mount_point: format!("local://{}", d.display()),
            name: format!("m{i}"),
            path: Some(path.to_string()),
            ..Default::default()
        })
        .collect();
    let mounts = resolve(specs, "mounts").unwrap();
    let with_sources = mounts
        .into_iter()
        .map(|m| {
            let fluid_volume::mountpoint::Store::Local { root } = &m.mount_point.store else {
                unreachable!()
            };
            let src: Arc<dyn Source> = Arc::new(LocalSource::new(root.clone(), &m.mount_point.url));
            (m, src)
        })
        .collect();
    Namespace::new(with_sources, ttl)
}

async fn names(ns: &Namespace, ino: u64) -> Vec<String> {
    let mut s = ns.open_dir(ino).unwrap();
    let mut i = 0;
    while ns.fill(&mut s, i).await.unwrap() {
        i += 1;
    }
    let mut v: Vec<_> = s.entries.into_iter().map(|(n, _)| n).collect();
    v.sort();
    v
}

#[tokio::test]
async fn a_successor_adopts_the_node_ids_of_the_journal() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    std::fs::create_dir_all(b.path().join("d/e")).unwrap();
    std::fs::write(b.path().join("d/e/f"), b"xyz").unwrap();
    let journal = Arc::new(Journal::open(Journal::create().unwrap()));
    let dirs = [(a.path(), "/a"), (b.path(), "/x/y/b")];
    let first = namespace(&dirs, Ttl::default()).with_journal(journal.clone());
    let f = first.resolve_path("/x/y/b/d/e/f").await.unwrap();
    assert_eq!(names(&first, ROOT).await, ["a", "x"]);

    // Made after the first listed `d`: only the successor sees it.
    std::fs::write(b.path().join("d/new"), b"1").unwrap();
    let second = namespace(&dirs, Ttl::default());
    let adopted = second.adopt(&journal.replay().unwrap().nodes);
    assert_eq!(adopted, 7, "x, y, b, d, e, f and a");
    let again = second.node(f.ino).unwrap();
    assert_eq!((again.location, again.meta.size), (f.location.clone(), 3));
    assert_eq!(second.path_of(f.ino), "/x/y/b/d/e/f");
    // Lookups find the adopted ids; new names get ids past them.
    assert_eq!(
        second.resolve_path("/x/y/b/d/e/f").await.unwrap().ino,
        f.ino
    );
    let d = second.resolve_path("/x/y/b/d").await.unwrap();
    let new = second.lookup(d.ino, "new").await.unwrap();
    assert!(new.ino > f.ino);
}

#[tokio::test]
async fn forgotten_nodes_are_dropped_and_journaled() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("dir")).unwrap();
    for i in 0..10 {
        std::fs::write(d.path().join(format!("dir/f{i}")), b"x").unwrap();
    }
    let journal = Arc::new(Journal::open(Journal::create().unwrap()));
    let ns = namespace(&[(d.path(), "/")], Ttl::default()).with_journal(journal.clone());
    let dir = ns.lookup(ROOT, "dir").await.unwrap();
    ns.looked_up(dir.ino);
    let f0 = ns.lookup(dir.ino, "f0").await.unwrap();
    ns.looked_up(f0.ino);
    ns.looked_up(f0.ino);
    let all = ns.node_count();
    assert_eq!(
        all, 12,
        "root, dir and its ten files (listed for the lookup)"
    );
    // Two lookups: the first forget of one keeps it.
    assert!(ns.forget(&[(f0.ino, 1)]).is_empty());
    assert_eq!(ns.forget(&[(f0.ino, 1)]), vec![f0.ino]);
    assert!(ns.node(f0.ino).is_err());
    // The name resolves again, to a new node id (the old one may be reused by nobody).
    let again = ns.lookup(dir.ino, "f0").await.unwrap();
    assert_ne!(again.ino, f0.ino);
    let replayed = journal.replay().unwrap();
    assert!(replayed.nodes.iter().all(|n| n.ino != f0.ino));
    assert!(replayed.nodes.iter().any(|n| n.ino == again.ino));

    // Adopted nodes go at their first forget, whatever its count.
    let successor = namespace(&[(d.path(), "/")], Ttl::default());
    successor.adopt(&replayed.nodes);
    assert_eq!(successor.forget(&[(dir.ino, 1)]), vec![dir.ino]);
    // The root is never forgotten.
    assert!(successor.forget(&[(ROOT, 1)]).is_empty());
}

#[tokio::test]
async fn virtual_levels_lead_to_mounts() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    std::fs::write(b.path().join("f"), b"x").unwrap();
    let ns = namespace(&[(a.path(), "/a"), (b.path(), "/x/y/b")], Ttl::default());
    assert_eq!(names(&ns, ROOT).await, ["a", "x"]);
    let x = ns.lookup(ROOT, "x").await.unwrap();
    assert_eq!(x.location, Location::Virtual);
    let f = ns.resolve_path("/x/y/b/f").await.unwrap();
    assert_eq!(f.meta.size, 1);
    assert_eq!(ns.path_of(f.ino), "/x/y/b/f");
    assert!(matches!(
        ns.lookup(x.ino, "nope").await,
        Err(Error::NotFound(_))
    ));
}

#[tokio::test]
async fn listings_stream_in_pages_and_missing_names_are_remembered() {
    let d = tempfile::tempdir().unwrap();
    for i in 0..2500 {
        std::fs::File::create(d.path().join(format!("e{i:04}"))).unwrap();
    }
    let ns = namespace(&[(d.path(), "/")], Ttl::default());
    let mut s = ns.open_dir(ROOT).unwrap();
    assert!(ns.fill(&mut s, 0).await.unwrap());
    assert!(
        s.entries.len() < 2500 && !s.is_complete(),
        "first page only: {}",
        s.entries.len()
    );
    assert_eq!(names(&ns, ROOT).await.len(), 2500);

    assert!(ns.lookup(ROOT, "later").await.is_err());
    std::fs::File::create(d.path().join("later")).unwrap();
    // Within the negative TTL the name stays missing.
    assert!(ns.lookup(ROOT, "later").await.is_err());
    let short = namespace(
        &[(d.path(), "/")],
        Ttl {
            negative: Duration::ZERO,
            ..Ttl::default()
        },
    );
    assert!(short.lookup(ROOT, "later").await.is_ok());
}

#[tokio::test]
async fn lookups_are_answered_from_one_listing_of_a_small_directory() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("a"), b"1").unwrap();
    let ns = namespace(&[(d.path(), "/")], Ttl::default());
    assert_eq!(ns.lookup(ROOT, "a").await.unwrap().meta.size, 1);
    // Made after the listing: unseen until the entries expire (a stat would find it).
    std::fs::write(d.path().join("b"), b"22").unwrap();
    assert!(matches!(
        ns.lookup(ROOT, "b").await,
        Err(Error::NotFound(_))
    ));
    let fresh = namespace(&[(d.path(), "/")], Ttl::default());
    assert_eq!(fresh.lookup(ROOT, "b").await.unwrap().meta.size, 2);

    // A directory too big to list for a lookup is asked name by name.
    let big = tempfile::tempdir().unwrap();
    for i in 0..LIST_FOR_LOOKUP_MAX + 1500 {
        std::fs::File::create(big.path().join(format!("e{i:05}"))).unwrap();
    }
    let ns = namespace(&[(big.path(), "/")], Ttl::default());
    assert!(ns.lookup(ROOT, "e00000").await.is_ok());
    std::fs::File::create(big.path().join("later")).unwrap();
    assert!(
        ns.lookup(ROOT, "later").await.is_ok(),
        "stat'ed, not listed"
    );
}
