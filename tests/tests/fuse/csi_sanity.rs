//! The CSI conformance suite, csi-sanity v5.4.0, against the real controller and node plugins,
//! with volumes backed by a SeaweedFS dataset so every stage makes a real FUSE mount.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fluid_tests::daemon::{binary, is_mounted};
use fluid_tests::services::{self, S3Server};

struct Plugin(Child);

impl Drop for Plugin {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        for _ in 0..100 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(bin: &str, args: &[String], socket: &Path, log: &Path) -> Plugin {
    let plugin = Plugin(
        Command::new(binary(bin))
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(log).unwrap())
            .stderr(std::fs::File::create(log.with_extension("err")).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {bin}: {e}")),
    );
    for _ in 0..200 {
        if socket.exists() {
            return plugin;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(plugin);
    panic!(
        "{bin} did not create {}: {}",
        socket.display(),
        std::fs::read_to_string(log.with_extension("err")).unwrap_or_default()
    );
}

/// "Ran 60 of 90 Specs ... 60 Passed | 0 Failed | 0 Pending | 30 Skipped" -> (passed, failed, skipped)
fn counts(out: &str) -> Option<(u32, u32, u32)> {
    let line = out
        .lines()
        .rev()
        .find(|l| l.contains("Passed") && l.contains("Failed"))?;
    let num = |word: &str| -> Option<u32> {
        let before = line.split(word).next()?;
        before
            .trim_end()
            .rsplit([' ', '|', '!'])
            .find(|s| !s.is_empty())?
            .trim()
            .parse()
            .ok()
    };
    Some((num("Passed")?, num("Failed")?, num("Skipped").unwrap_or(0)))
}

fn run_sanity(round: u32, server: &S3Server, bucket: &str) {
    let dir = tempfile::Builder::new()
        .prefix("csi-sanity")
        .tempdir()
        .unwrap();
    let d = dir.path();
    let controller_sock = d.join("controller.sock");
    let node_sock = d.join("node.sock");
    let _controller = start(
        "fluid-csi-controller",
        &[
            format!("--endpoint=unix://{}", controller_sock.display()),
            format!("--state-dir={}", d.join("controller-state").display()),
        ],
        &controller_sock,
        &d.join("controller.log"),
    );
    let _node = start(
        "fluid-csi-node",
        &[
            format!("--endpoint=unix://{}", node_sock.display()),
            "--nodeid=sanity-node".into(),
            format!("--state-dir={}", d.join("node-state").display()),
            "--tier=mem:256MiB".into(),
        ],
        &node_sock,
        &d.join("node.log"),
    );
    let params = d.join("params.yaml");
    std::fs::write(
        &params,
        format!(
            "mountPoint: s3://{bucket}\nmountOptions: endpoint={},region={}\n",
            server.endpoint, server.region
        ),
    )
    .unwrap();
    let secrets = d.join("secrets.yaml");
    std::fs::write(
        &secrets,
        format!(
            "NodeStageVolumeSecret:\n  access-key: {}\n  secret-key: {}\n",
            server.access_key, server.secret_key
        ),
    )
    .unwrap();

    let out = Command::new(services::csi_sanity().unwrap_or_else(|e| panic!("{e:#}")))
        .arg(format!("--csi.endpoint=unix://{}", node_sock.display()))
        .arg(format!(
            "--csi.controllerendpoint=unix://{}",
            controller_sock.display()
        ))
        .arg(format!("--csi.mountdir={}", d.join("mnt").display()))
        .arg(format!("--csi.stagingdir={}", d.join("staging").display()))
        .arg(format!("--csi.testvolumeparameters={}", params.display()))
        .arg(format!("--csi.secrets={}", secrets.display()))
        .arg("--ginkgo.no-color")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let (passed, failed, skipped) =
        counts(&text).unwrap_or_else(|| panic!("no summary in csi-sanity output:\n{text}"));
    eprintln!("csi-sanity round {round}: {passed} passed, {failed} failed, {skipped} skipped");
    assert!(
        out.status.success() && failed == 0,
        "csi-sanity round {round} failed:\n{text}"
    );
    assert!(passed > 30, "suspiciously few specs ran: {passed}\n{text}");

    drop(_node);
    drop(_controller);
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !info.contains(&d.display().to_string()),
        "mounts left behind under {}:\n{info}",
        d.display()
    );
    assert!(!is_mounted(&d.join("staging")));
}

#[test]
fn csi_sanity_passes_twice_in_a_row() {
    let server = S3Server::seaweedfs().unwrap_or_else(|e| panic!("{e:#}"));
    let bucket = server
        .temp_bucket("sanity")
        .unwrap_or_else(|e| panic!("{e:#}"));
    services::on_own_runtime({
        let s3 = server.client();
        let b = bucket.name.clone();
        async move {
            s3.put_object()
                .bucket(&b)
                .key("hello.txt")
                .body(b"hello".to_vec().into())
                .send()
                .await
                .map(|_| ())
        }
    })
    .unwrap();
    run_sanity(1, &server, &bucket.name);
    run_sanity(2, &server, &bucket.name);
}

#[test]
fn summary_line_is_parsed() {
    let out = "Ran 71 of 91 Specs in 12.3 seconds\nSUCCESS! -- 71 Passed | 0 Failed | 0 Pending | 20 Skipped\n";
    assert_eq!(counts(out), Some((71, 0, 20)));
    let bad = "FAIL! -- 69 Passed | 2 Failed | 0 Pending | 20 Skipped";
    assert_eq!(counts(bad), Some((69, 2, 20)));
}
