//! `fluid-csi-controller`: not built yet (see the issues). It exits non-zero so nothing mistakes it for a
//! working plugin.
fn main() {
    eprintln!("fluid-csi-controller: not built yet");
    std::process::exit(2);
}
