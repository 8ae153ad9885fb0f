//! `fluid-csi-controller`: the CSI Identity and Controller plugin of Fluid (see the crate docs
//! and `--help`).

use std::process::ExitCode;

use clap::Parser;
use csi_controller::{Command, Config, run};

fn main() -> ExitCode {
    let config = Config::parse();
    if let Some(Command::Crds) = config.command {
        // Plain stdout, no logging set up: the output is piped into files or kubectl.
        let mut out = std::io::stdout().lock();
        return match std::io::Write::write_all(
            &mut out,
            csi_controller::crd::crds_yaml().as_bytes(),
        )
        .and_then(|()| std::io::Write::flush(&mut out))
        {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("fluid-csi-controller: writing the CRDs: {e}");
                ExitCode::FAILURE
            }
        };
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FLUID_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fluid-csi-controller: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(Command::Evict { dataset, paths }) = config.command {
        return match runtime.block_on(csi_controller::evict(
            &dataset,
            &paths,
            config.cache_token.as_ref().map(|t| t.as_str()),
        )) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("fluid-csi-controller evict: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fluid-csi-controller: {e}");
            ExitCode::FAILURE
        }
    }
}
