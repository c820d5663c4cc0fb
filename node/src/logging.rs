//! tracing setup: `RUST_LOG` filter (default given by the command), optional JSON lines.

use tracing_subscriber::EnvFilter;

/// `default_filter` applies when `RUST_LOG` is unset.
pub fn init(json: bool, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // try_init: a second initialisation (tests, embedded use) is not an error.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
