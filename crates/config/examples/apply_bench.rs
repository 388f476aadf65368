//! Measures sequential `ConfigStore::apply` creates (each fsynced) on a file with N users.
//!
//! `cargo run --release -p mtproxyd-config --example apply_bench -- [DIR] [USERS] [CREATES]`
//! DIR defaults to the current directory (use a real disk, not tmpfs, for honest fsync costs).

use std::time::Instant;

use config::{ConfigStore, NewUser, UserEdit, UserSecret};

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| ".".into());
    let users: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let creates: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(300);
    let tmp = tempfile::tempdir_in(&dir).expect("tempdir");
    let path = tmp.path().join("config.toml");
    let mut text = String::from("# bench\n[server]\nport = 8443\n\n[access.users] # people\n");
    for i in 0..users {
        text.push_str(&format!("user_{i:05} = \"{}\"\n", UserSecret::random()));
    }
    std::fs::write(&path, &text).expect("write");
    let t = Instant::now();
    let store = ConfigStore::open(&path).expect("open");
    println!(
        "open: {users} users, {} bytes, {:?}",
        text.len(),
        t.elapsed()
    );
    let cpu0 = cpu_ns();
    let t = Instant::now();
    let mut worst = std::time::Duration::ZERO;
    for i in 0..creates {
        let one = Instant::now();
        store
            .apply(
                None,
                UserEdit::Create(NewUser::new(format!("new_{i:05}"), UserSecret::random())),
            )
            .expect("apply");
        worst = worst.max(one.elapsed());
    }
    let el = t.elapsed();
    println!(
        "{creates} creates in {el:?}: {:.0} creates/s (worst {worst:?})",
        creates as f64 / el.as_secs_f64()
    );
    if let (Some(a), Some(b)) = (cpu0, cpu_ns()) {
        println!(
            "CPU time per create (this thread, excl. waiting for the disk): {:.2} ms",
            (b - a) as f64 / 1e6 / creates as f64
        );
    }
    let t = Instant::now();
    for _ in 0..1_000_000 {
        std::hint::black_box(store.current());
    }
    println!("current(): {:?} per call", t.elapsed() / 1_000_000);
}

/// On-CPU nanoseconds of this thread (Linux schedstat), to factor out machine load.
fn cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}
