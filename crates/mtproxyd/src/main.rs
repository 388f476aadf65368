//! `mtproxyd`: the binary. CLI (`run`, `check`, `links`), logging, wiring of config store,
//! stats, control-plane API and (later) the data plane, signals and graceful shutdown.
//! Must not contain business logic: everything it runs lives in the library crates.

mod api_listener;
mod commands;
mod doctor;
mod hooks;
mod logging;
mod netinfo;
mod run;
mod runtime;
mod usercli;

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

/// Config file help, shared by every command.
const CONFIG_HELP: &str = "Config file [default: $MTPROXYD_CONFIG, else ./config.toml if it \
exists, else $XDG_CONFIG_HOME/mtproxyd/config.toml or ~/.config/mtproxyd/config.toml]";

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy (creates a commented default config with one user when PATH is absent).
    Run {
        #[arg(long, short, help = CONFIG_HELP)]
        config: Option<PathBuf>,
    },
    /// Validate a config file: prints warnings and errors (with key names); exit 0 if valid.
    Check {
        #[arg(long, short, help = CONFIG_HELP)]
        config: Option<PathBuf>,
    },
    /// Manage users through the running proxy's API (address and auth from the config).
    User {
        #[arg(long, short, help = CONFIG_HELP)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        cmd: usercli::UserCommand,
    },
    /// Check the prerequisites (config, listeners, mask host, DCs, open-files limit); one
    /// line per check with the fix; exit 1 when something failed.
    Doctor {
        #[arg(long, short, help = CONFIG_HELP)]
        config: Option<PathBuf>,
    },
    /// Print tg:// links of every user (or of USER).
    Links {
        #[arg(long, short, help = CONFIG_HELP)]
        config: Option<PathBuf>,
        /// Only this user.
        user: Option<String>,
    },
}

/// Where the config lives when `--config` is not given (the same for every command, so
/// `check` and `links` find what `run` created): `$MTPROXYD_CONFIG`; else `./config.toml`
/// when it exists (telemt's habit); else the user's config directory, so a first run from a
/// source checkout does not write secrets into the tree.
fn default_config_path(
    env: impl Fn(&str) -> Option<std::ffi::OsString>,
    cwd_has_config: bool,
) -> PathBuf {
    if let Some(p) = env("MTPROXYD_CONFIG").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if cwd_has_config {
        return PathBuf::from("config.toml");
    }
    let base = env("XDG_CONFIG_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            env("HOME")
                .filter(|p| !p.is_empty())
                .map(|h| PathBuf::from(h).join(".config"))
        });
    match base {
        Some(b) => b.join("mtproxyd").join("config.toml"),
        None => PathBuf::from("config.toml"),
    }
}

fn config_or_default(given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(|| {
        default_config_path(
            |k| std::env::var_os(k),
            std::path::Path::new("config.toml").exists(),
        )
    })
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
        Command::Check { config } => commands::check(&config_or_default(config)),
        Command::User { config, cmd } => usercli::run(&config_or_default(config), cmd),
        Command::Doctor { config } => doctor::run(&config_or_default(config)),
        Command::Links { config, user } => {
            commands::links(&config_or_default(config), user.as_deref())
        }
        Command::Run { config } => {
            let config = config_or_default(config);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_path_order() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        };
        let all = env(&[("MTPROXYD_CONFIG", "/x/c.toml"), ("HOME", "/home/u")]);
        assert_eq!(default_config_path(all, true), PathBuf::from("/x/c.toml"));
        let home = env(&[("HOME", "/home/u")]);
        assert_eq!(
            default_config_path(home, true),
            PathBuf::from("config.toml")
        );
        assert_eq!(
            default_config_path(home, false),
            PathBuf::from("/home/u/.config/mtproxyd/config.toml")
        );
        let xdg = env(&[("HOME", "/home/u"), ("XDG_CONFIG_HOME", "/cfg")]);
        assert_eq!(
            default_config_path(xdg, false),
            PathBuf::from("/cfg/mtproxyd/config.toml")
        );
        assert_eq!(
            default_config_path(env(&[]), false),
            PathBuf::from("config.toml")
        );
    }
}
