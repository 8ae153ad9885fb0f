//! Logging of the three binaries: one variable, [`LOG_ENV`], read the same way by each. The
//! node plugin passes its value on to the `fluid-fuse` daemons it starts, so one setting (the
//! chart's `node.logLevel`) reaches both.

use tracing_subscriber::EnvFilter;

/// The variable holding the log filter: a level (`debug`) or `tracing` directives
/// (`info,fuse_cache=debug`).
pub const LOG_ENV: &str = "FLUID_LOG";

/// The filter when [`LOG_ENV`] is unset or empty.
pub const DEFAULT_FILTER: &str = "info";

/// The filter text to hand to a child process so that it logs as this one does: the value of
/// [`LOG_ENV`], or [`DEFAULT_FILTER`] when unset.
pub fn filter_for_children() -> String {
    std::env::var(LOG_ENV)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_FILTER.to_string())
}

/// The filter in effect: [`LOG_ENV`] when set to a valid filter, else [`DEFAULT_FILTER`],
/// with the reason it was not taken.
fn filter() -> (EnvFilter, Option<String>) {
    match std::env::var(LOG_ENV) {
        Ok(v) if !v.trim().is_empty() => match EnvFilter::try_new(&v) {
            Ok(f) => (f, None),
            Err(e) => (
                EnvFilter::new(DEFAULT_FILTER),
                Some(format!(
                    "{LOG_ENV}={v:?} is not a log filter ({e}); using {DEFAULT_FILTER:?}"
                )),
            ),
        },
        _ => (EnvFilter::new(DEFAULT_FILTER), None),
    }
}

/// Logs to standard error as configured by [`LOG_ENV`]. A bad value is reported and the
/// default used: a typo in a log level must not keep a daemon from starting.
pub fn init_logging() {
    let (filter, problem) = filter();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if let Some(p) = problem {
        tracing::warn!("{p}");
    }
}
