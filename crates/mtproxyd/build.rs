//! Build metadata for `/v1/system/info` and `--version`: git commit, build time (UTC) and the
//! rustc version, exported as `MTPROXYD_GIT_COMMIT`, `MTPROXYD_BUILD_TIME_UTC`,
//! `MTPROXYD_RUSTC_VERSION` and `MTPROXYD_BUILD_PROFILE` when they can be determined. Missing
//! tools (no git checkout, no rustc on PATH) simply leave the variable unset.

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

fn run(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!s.is_empty()).then_some(s)
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // Re-stamp when the checked-out commit moves (not on every build: that would relink the
    // binary each time).
    if let Some(git_dir) = run("git", &["rev-parse", "--absolute-git-dir"]) {
        println!("cargo:rerun-if-changed={git_dir}/HEAD");
        println!("cargo:rerun-if-changed={git_dir}/refs/heads");
    }
    if let Some(commit) = run("git", &["rev-parse", "--short=12", "HEAD"]) {
        println!("cargo:rustc-env=MTPROXYD_GIT_COMMIT={commit}");
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    if let Some(v) = run(&rustc, &["--version"]) {
        println!("cargo:rustc-env=MTPROXYD_RUSTC_VERSION={v}");
    }
    if let Ok(profile) = std::env::var("PROFILE") {
        println!("cargo:rustc-env=MTPROXYD_BUILD_PROFILE={profile}");
    }
    if let Ok(d) = SystemTime::now().duration_since(UNIX_EPOCH) {
        let secs = d.as_secs() as i64;
        let (y, m, day) = civil_from_days(secs.div_euclid(86_400));
        let rem = secs.rem_euclid(86_400);
        println!(
            "cargo:rustc-env=MTPROXYD_BUILD_TIME_UTC={y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        );
    }
}
