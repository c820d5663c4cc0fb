//! tracing setup: `RUST_LOG` filter (default given by the command), optional
//! JSON lines. Colour only when stderr is a terminal and `NO_COLOR` is unset,
//! so redirected logs carry no ANSI escape codes.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Whether log lines written to stderr should be coloured.
pub fn use_colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// `default_filter` applies when `RUST_LOG` is unset.
pub fn init(json: bool, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(use_colour())
        .with_writer(std::io::stderr);
    // try_init: a second initialisation (tests, embedded use) is not an error.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
