//! Compiles the .proto files with protox (pure Rust), so no system `protoc` is needed.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("proto");
    let files = ["csi.proto", "fluid.proto", "pluginregistration.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={}", dir.join(f).display());
    }
    let fds = protox::compile(files, [&dir])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Block chunks stay slices of the block they came from, with no copy.
        .bytes(".fluid.v1.BlockChunk.data")
        .compile_fds(fds)?;
    Ok(())
}
