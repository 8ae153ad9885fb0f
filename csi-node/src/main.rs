//! `fluid-csi-node`: the command line of the node plugin (see the library's doc).

use std::process::ExitCode;

use csi_node::config::Config;

fn main() -> ExitCode {
    let cfg = Config::try_from_args(std::env::args_os()).unwrap_or_else(|e| e.exit());
    fluid_volume::logging::init_logging();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(csi_node::run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
