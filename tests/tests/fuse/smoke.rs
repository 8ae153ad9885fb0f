//! Smoke tests of the test environment itself: each real server answers the calls the data
//! path relies on, csi-sanity is installed, and a real FUSE mount works where the tests run.

use std::collections::BTreeSet;

use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use fluid_tests::services::{self, S3Server};
use rand::RngCore;

fn random_bytes(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::rng().fill_bytes(&mut v);
    v
}

/// put, get, range get, delimiter listing and paginated listing on one S3 server.
async fn s3_roundtrip(server: &S3Server) {
    let s3 = server.client();
    let bucket = services::unique_name("smoke");
    s3.create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}: create bucket: {e:?}", server.name));

    let big = random_bytes(3 * 1024 * 1024 + 17);
    let keys = ["dir/a.bin", "dir/sub/b.txt", "dir/sub/c.txt", "top.txt"];
    for key in keys {
        let body = if key == "dir/a.bin" {
            big.clone()
        } else {
            key.as_bytes().to_vec()
        };
        s3.put_object()
            .bucket(&bucket)
            .key(key)
            .body(ByteStream::from(body))
            .send()
            .await
            .unwrap();
    }

    let got = s3
        .get_object()
        .bucket(&bucket)
        .key("dir/a.bin")
        .send()
        .await
        .unwrap();
    assert_eq!(got.content_length(), Some(big.len() as i64));
    assert_eq!(
        got.body.collect().await.unwrap().into_bytes(),
        Bytes::from(big.clone())
    );

    let range = s3
        .get_object()
        .bucket(&bucket)
        .key("dir/a.bin")
        .range("bytes=1048570-2097160")
        .send()
        .await
        .unwrap();
    let part = range.body.collect().await.unwrap().into_bytes();
    assert_eq!(
        &part[..],
        &big[1048570..=2097160],
        "{}: range get",
        server.name
    );

    let listed = s3
        .list_objects_v2()
        .bucket(&bucket)
        .prefix("dir/")
        .delimiter("/")
        .send()
        .await
        .unwrap();
    let files: Vec<_> = listed.contents().iter().filter_map(|o| o.key()).collect();
    let dirs: Vec<_> = listed
        .common_prefixes()
        .iter()
        .filter_map(|p| p.prefix())
        .collect();
    assert_eq!(files, ["dir/a.bin"]);
    assert_eq!(dirs, ["dir/sub/"]);
    assert_eq!(listed.contents()[0].size(), Some(big.len() as i64));
    assert!(
        listed.contents()[0].e_tag().is_some_and(|t| !t.is_empty()),
        "{}: ETag in listing",
        server.name
    );

    // One key a page, so the continuation token is exercised.
    let mut seen = BTreeSet::new();
    let mut token = None;
    let mut pages = 0;
    loop {
        let page = s3
            .list_objects_v2()
            .bucket(&bucket)
            .max_keys(1)
            .set_continuation_token(token)
            .send()
            .await
            .unwrap();
        pages += 1;
        seen.extend(
            page.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_string)),
        );
        token = page.next_continuation_token().map(str::to_string);
        if token.is_none() {
            break;
        }
        assert!(
            pages <= keys.len(),
            "{}: pagination does not end",
            server.name
        );
    }
    assert_eq!(seen, keys.iter().map(|k| k.to_string()).collect());
    assert!(
        pages >= keys.len(),
        "{}: expected one key per page",
        server.name
    );

    for key in keys {
        s3.delete_object()
            .bucket(&bucket)
            .key(key)
            .send()
            .await
            .unwrap();
    }
    s3.delete_bucket().bucket(&bucket).send().await.unwrap();
}

#[tokio::test]
async fn seaweedfs_s3_put_get_range_list() {
    let server = S3Server::seaweedfs().unwrap_or_else(|e| panic!("{e:#}"));
    s3_roundtrip(&server).await;
}

#[tokio::test]
async fn ceph_rgw_put_get_range_list() {
    let server = S3Server::ceph_rgw().unwrap_or_else(|e| panic!("{e:#}"));
    s3_roundtrip(&server).await;
}

#[tokio::test]
async fn seaweedfs_rejects_a_wrong_secret() {
    let mut server = S3Server::seaweedfs().unwrap_or_else(|e| panic!("{e:#}"));
    server.secret_key = "not-the-secret".into();
    let err = server
        .client()
        .list_buckets()
        .send()
        .await
        .expect_err("a wrong secret must be refused");
    let status = err.raw_response().map(|r| r.status().as_u16());
    assert_eq!(status, Some(403), "{err:?}");
}

#[tokio::test]
async fn minidfs_write_read_list() {
    let url = services::hdfs_url().unwrap_or_else(|e| panic!("{e:#}"));
    let client = hdfs_native::ClientBuilder::new()
        .with_url(&url)
        .build()
        .unwrap();
    let root = format!("/{}", services::unique_name("smoke"));
    let data = random_bytes(2 * 1024 * 1024 + 3);

    let mut w = client
        .create(
            &format!("{root}/d/file.bin"),
            hdfs_native::WriteOptions::default(),
        )
        .await
        .unwrap();
    w.write_bytes(Bytes::from(data.clone())).await.unwrap();
    w.close().await.unwrap();
    client
        .mkdirs(&format!("{root}/empty"), 0o755, true)
        .await
        .unwrap();

    let r = client.read(&format!("{root}/d/file.bin")).await.unwrap();
    assert_eq!(r.file_length(), data.len());
    assert_eq!(
        r.read_range(0, data.len()).await.unwrap(),
        Bytes::from(data.clone())
    );
    assert_eq!(
        &r.read_range(1_000_000, 4096).await.unwrap()[..],
        &data[1_000_000..1_004_096]
    );

    let mut listed: Vec<_> = client
        .list_status(&root, false)
        .await
        .unwrap()
        .into_iter()
        .map(|s| {
            (
                s.path.rsplit('/').next().unwrap_or_default().to_string(),
                s.isdir,
            )
        })
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        [("d".to_string(), true), ("empty".to_string(), true)]
    );
    let status = client
        .get_file_info(&format!("{root}/d/file.bin"))
        .await
        .unwrap();
    assert_eq!((status.length, status.isdir), (data.len(), false));

    assert!(client.delete(&root, true).await.unwrap());
}

#[test]
fn csi_sanity_is_installed() {
    let bin = services::csi_sanity().unwrap_or_else(|e| panic!("{e:#}"));
    let out = std::process::Command::new(&bin)
        .arg("-version")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("v5.4.0"),
        "csi-sanity -version printed {text:?}"
    );
}

mod fuse {
    //! A one-file read-only file system, mounted for real through /dev/fuse.
    use std::ffi::OsStr;
    use std::time::{Duration, UNIX_EPOCH};

    use fuser::{
        Errno, FileAttr, FileHandle, FileType, Filesystem, Generation, INodeNo, LockOwner,
        OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, Request,
    };

    pub const CONTENT: &[u8] = b"hello from a real fuse mount\n";
    const FILE: INodeNo = INodeNo(2);
    const TTL: Duration = Duration::from_secs(1);

    pub struct HelloFs;

    fn attr(ino: INodeNo) -> FileAttr {
        let dir = ino == INodeNo::ROOT;
        FileAttr {
            ino,
            size: if dir { 0 } else { CONTENT.len() as u64 },
            blocks: 1,
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind: if dir {
                FileType::Directory
            } else {
                FileType::RegularFile
            },
            perm: if dir { 0o755 } else { 0o644 },
            nlink: if dir { 2 } else { 1 },
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    impl Filesystem for HelloFs {
        fn lookup(&self, _: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
            if parent == INodeNo::ROOT && name == "hello.txt" {
                reply.entry(&TTL, &attr(FILE), Generation(0));
            } else {
                reply.error(Errno::ENOENT);
            }
        }
        fn getattr(&self, _: &Request, ino: INodeNo, _: Option<FileHandle>, reply: ReplyAttr) {
            match ino {
                INodeNo::ROOT | FILE => reply.attr(&TTL, &attr(ino)),
                _ => reply.error(Errno::ENOENT),
            }
        }
        fn read(
            &self,
            _: &Request,
            ino: INodeNo,
            _: FileHandle,
            offset: u64,
            size: u32,
            _: OpenFlags,
            _: Option<LockOwner>,
            reply: ReplyData,
        ) {
            if ino != FILE {
                return reply.error(Errno::ENOENT);
            }
            let start = (offset as usize).min(CONTENT.len());
            let end = (start + size as usize).min(CONTENT.len());
            reply.data(&CONTENT[start..end]);
        }
        fn readdir(
            &self,
            _: &Request,
            ino: INodeNo,
            _: FileHandle,
            offset: u64,
            mut reply: ReplyDirectory,
        ) {
            if ino != INodeNo::ROOT {
                return reply.error(Errno::ENOTDIR);
            }
            let entries = [
                (INodeNo::ROOT, FileType::Directory, "."),
                (INodeNo::ROOT, FileType::Directory, ".."),
                (FILE, FileType::RegularFile, "hello.txt"),
            ];
            for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
                if reply.add(*ino, (i + 1) as u64, *kind, name) {
                    break;
                }
            }
            reply.ok();
        }
    }
}

fn mounted_at(dir: &std::path::Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let dir = dir.to_str().unwrap();
    info.lines().any(|l| l.split(' ').nth(4) == Some(dir))
}

#[test]
fn fuse_mount_read_unmount() {
    assert!(
        std::path::Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing: FUSE mounts cannot work here"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::RO,
        fuser::MountOption::FSName("fluid-smoke".into()),
    ];
    let session = fuser::spawn_mount(fuse::HelloFs, dir.path(), &config).unwrap_or_else(|e| {
        panic!(
            "FUSE mount at {} failed (are we root with /dev/fuse?): {e}",
            dir.path().display()
        )
    });

    assert!(
        mounted_at(dir.path()),
        "mount not listed in /proc/self/mountinfo"
    );
    assert_eq!(
        std::fs::read(dir.path().join("hello.txt")).unwrap(),
        fuse::CONTENT
    );
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["hello.txt"]);
    assert_eq!(
        std::fs::read(dir.path().join("absent")).unwrap_err().kind(),
        std::io::ErrorKind::NotFound
    );
    let write = std::fs::write(dir.path().join("new"), b"x").unwrap_err();
    assert_eq!(write.raw_os_error(), Some(libc::EROFS), "{write}");

    session.umount_and_join().unwrap();
    assert!(!mounted_at(dir.path()), "still mounted after unmount");
}

/// The service scripts signal only processes they started: a pid file whose pid another process
/// has taken since (a reboot, a machine restored from a copy of the services directory) names
/// that other process, and `down` must leave it alone. CI once lost its MiniDFS that way.
#[test]
fn service_scripts_never_signal_a_process_they_did_not_start() {
    let lib = services::repo_root().join("scripts/services/lib.sh");
    let dir = tempfile::tempdir().unwrap();
    let mut bystander = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let script = |body: &str| {
        std::process::Command::new("bash")
            .arg("-c")
            .arg(format!("set -euo pipefail; source \"$0\"; {body}"))
            .arg(&lib)
            .env("FLUID_SERVICES_DIR", dir.path())
            .output()
            .unwrap()
    };
    let stale = dir.path().join("stale.pid");
    for record in [format!("{} 1", bystander.id()), bystander.id().to_string()] {
        std::fs::write(&stale, record).unwrap();
        let out = script(&format!(
            "if pid_alive {0}; then echo alive; fi; stop_pid {0} TERM 1",
            stale.display()
        ));
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "", "{out:?}");
        assert!(!stale.exists(), "a stale pid file is removed");
        assert!(
            bystander.try_wait().unwrap().is_none(),
            "the process that took the pid was signalled"
        );
    }

    // The process a script records is the one it stops.
    let own = dir.path().join("own.pid");
    let out = script(&format!(
        "record_pid {1} {0}; pid_alive {0} && echo alive; stop_pid {0} TERM 5",
        own.display(),
        bystander.id()
    ));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "alive\n");
    let status = bystander.wait().unwrap();
    assert!(
        !status.success(),
        "the recorded process was stopped: {status:?}"
    );
}
