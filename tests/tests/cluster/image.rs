//! The image: deploy/image/Dockerfile (for users with Docker or any OCI builder) and
//! scripts/image.sh (this machine, no Docker engine) ship the same binaries and packages, every
//! binary is one the workspace builds, and the script tags what the chart runs by default.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use fluid_tests::daemon::binary;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The binaries the Dockerfile copies out of its build stage, and the packages its runtime
/// stage installs.
fn dockerfile() -> (BTreeSet<String>, BTreeSet<String>) {
    let text = read("deploy/image/Dockerfile");
    let binaries = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("COPY --from=build "))
        .flat_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let sources = &words[..words.len() - 1];
            assert_eq!(words.last(), Some(&"/usr/local/bin/"), "{l}");
            sources
                .iter()
                .map(|s| s.rsplit('/').next().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    let install = text
        .split("apt-get install")
        .nth(1)
        .expect("the Dockerfile installs packages");
    let packages = install
        .split("&&")
        .next()
        .unwrap()
        .split_whitespace()
        .filter(|w| !w.starts_with('-') && *w != "\\")
        .map(str::to_string)
        .collect();
    (binaries, packages)
}

/// A bash array `NAME=(a b c)` of scripts/image.sh.
fn script_list(name: &str) -> BTreeSet<String> {
    let text = read("scripts/image.sh");
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=(")))
        .unwrap_or_else(|| panic!("scripts/image.sh has no {name}=(...)"));
    line.trim_end_matches(')')
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

#[test]
fn dockerfile_and_script_ship_the_same_files() {
    let (binaries, packages) = dockerfile();
    assert_eq!(binaries, script_list("BINARIES"));
    assert_eq!(packages, script_list("PACKAGES"));
    let want: BTreeSet<String> = [
        "fluid-fuse",
        "fluid-csi-node",
        "fluid-csi-controller",
        "fluid-csi",
    ]
    .map(String::from)
    .into();
    assert_eq!(binaries, want, "the four binaries");
    assert!(packages.contains("fuse3") && packages.contains("ca-certificates"));
    // Each is a binary of the workspace (`make test` builds them all first).
    for b in &binaries {
        assert!(
            binary(b).is_file(),
            "{b} is not a binary this workspace builds"
        );
    }
}

#[test]
fn the_script_tags_the_image_the_chart_runs() {
    let out = Command::new(repo().join("scripts/image.sh"))
        .arg("--print-ref")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reference = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let values = read("deploy/charts/fluid/values.yaml");
    let chart = read("deploy/charts/fluid/Chart.yaml");
    let repository = values
        .lines()
        .find_map(|l| l.strip_prefix("  repository: "))
        .unwrap();
    let app_version = chart
        .lines()
        .find_map(|l| l.strip_prefix("appVersion: "))
        .unwrap()
        .trim_matches('"');
    assert_eq!(reference, format!("{repository}:{app_version}"));
    let bad = Command::new(repo().join("scripts/image.sh"))
        .arg("--bogus")
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown argument --bogus"));
}
