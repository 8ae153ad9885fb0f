//! `fluid-fuse`: not built yet (see the issues). It exits non-zero so nothing mistakes it for a
//! working file system.
fn main() {
    eprintln!("fluid-fuse: not built yet");
    std::process::exit(2);
}
