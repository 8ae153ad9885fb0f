//! The committed CRDs of the Helm chart (`deploy/charts/fluid/crds/`) are exactly what the
//! Rust types generate, so a change to the types cannot ship with stale YAML.

use std::path::Path;
use std::process::Command;

use fluid_tests::daemon::binary;

/// In the order `fluid-csi-controller crds` prints them.
use csi_controller::crd::CRD_FILES as FILES;

const REGENERATE: &str = "regenerate with: make crds";

#[test]
fn committed_crds_match_the_generated_ones() {
    let exe = binary("fluid-csi-controller");
    assert!(
        exe.exists(),
        "{} not built: run `cargo build -p csi-controller` first",
        exe.display()
    );
    let out = Command::new(&exe).arg("crds").output().unwrap();
    assert!(
        out.status.success(),
        "fluid-csi-controller crds failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let generated = String::from_utf8(out.stdout).unwrap();

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/charts/fluid/crds");
    let mut committed = String::new();
    for file in FILES {
        let path = dir.join(file);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; {REGENERATE}", path.display()));
        assert!(
            text.starts_with("---\n") && text.matches("\n---\n").count() == 0,
            "{file} must hold exactly one document starting with ---; {REGENERATE}"
        );
        committed.push_str(&text);
    }
    assert!(
        generated == committed,
        "deploy/charts/fluid/crds/ differs from `fluid-csi-controller crds`; {REGENERATE}"
    );
    for (kind, plural) in [
        ("Dataset", "datasets"),
        ("CacheRuntime", "cacheruntimes"),
        ("DataLoad", "dataloads"),
    ] {
        assert!(
            generated.contains(&format!("name: {plural}.data.fluid.io\n")),
            "{plural}"
        );
        assert!(generated.contains(&format!("kind: {kind}\n")), "{kind}");
    }
}
