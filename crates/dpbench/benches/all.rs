//! `cargo bench -p dpbench`: every scenario with default sizes (spawns the mtproxyd release
//! binary, building it if missing). Exits non-zero if any measurement could not run.

use std::process::ExitCode;

fn main() -> ExitCode {
    let opts = dpbench::Options::default();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = rt.block_on(dpbench::run(&opts));
    println!("{}", report.summary());
    if report.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
