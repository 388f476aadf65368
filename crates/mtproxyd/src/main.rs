//! `mtproxyd`: the binary. CLI (`run`, `check`, `links`), logging, wiring of config store,
//! stats, control-plane API and (later) the data plane, signals and graceful shutdown.
//! Must not contain business logic: everything it runs lives in the library crates.

mod api_listener;
mod commands;
mod hooks;
mod logging;
mod netinfo;
mod run;
mod runtime;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// What build.rs could find out about this build (reported by `--version` and `/v1/system/info`).
pub(crate) const BUILD_INFO: api::runtime::BuildInfo = api::runtime::BuildInfo {
    profile: option_env!("MTPROXYD_BUILD_PROFILE"),
    git_commit: option_env!("MTPROXYD_GIT_COMMIT"),
    build_time_utc: option_env!("MTPROXYD_BUILD_TIME_UTC"),
    rustc_version: option_env!("MTPROXYD_RUSTC_VERSION"),
};

fn long_version() -> String {
    let or_unknown = |v: Option<&'static str>| v.unwrap_or("unknown");
    format!(
        "{}\ncommit: {}\nbuilt: {}\nrustc: {}",
        env!("CARGO_PKG_VERSION"),
        or_unknown(BUILD_INFO.git_commit),
        or_unknown(BUILD_INFO.build_time_utc),
        or_unknown(BUILD_INFO.rustc_version),
    )
}

/// MTProto proxy for Telegram with a JSON control-plane API (telemt-compatible config).
#[derive(Debug, Parser)]
#[command(name = "mtproxyd", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy (creates a commented default config with one user when PATH is absent).
    Run {
        /// Config file.
        #[arg(long, short, default_value = "config.toml")]
        config: PathBuf,
    },
    /// Validate a config file: prints warnings and errors (with key names); exit 0 if valid.
    Check {
        /// Config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print tg:// links of every user (or of USER).
    Links {
        /// Config file.
        #[arg(long, short, default_value = "config.toml")]
        config: PathBuf,
        /// Only this user.
        user: Option<String>,
    },
}

fn main() -> ExitCode {
    // clap wants a `'static` string here; leaking one short string once per process is fine.
    let long: &'static str = Box::leak(long_version().into_boxed_str());
    let matches = Cli::command().long_version(long).get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match cli.command {
        Command::Check { config } => commands::check(&config),
        Command::Links { config, user } => commands::links(&config, user.as_deref()),
        Command::Run { config } => {
            let log = logging::init();
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("mtproxyd")
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(run::run(config, log)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
