//! Multi-user matching cost. Each benchmark's reported time is **per secret
//! tried**: the init/hello matches no user, so all N secrets are tried and the
//! measured total is divided by N. Time is this thread's CPU time when the OS
//! exposes it (so a loaded machine does not inflate the figures).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use proto::{
    build_client_hello, match_init, ClientHelloParams, FakeTlsHello, HelloError, ObfuscatedInit,
    TagSet, TlsPolicy, UserTable,
};

fn secrets(n: usize) -> Vec<[u8; 16]> {
    (0..n)
        .map(|i| {
            let mut s = [0x33u8; 16];
            s[..8].copy_from_slice(&(i as u64).to_le_bytes());
            s
        })
        .collect()
}

/// CPU time of this thread in ns (Linux schedstat), so that other processes
/// competing for the cores do not inflate the figures; wall clock elsewhere.
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

fn per_secret(n: usize, iters: u64, mut f: impl FnMut()) -> Duration {
    let cpu0 = thread_cpu_ns();
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    let wall = start.elapsed();
    let total = match (cpu0, thread_cpu_ns()) {
        (Some(a), Some(b)) if b > a => Duration::from_nanos(b - a),
        _ => wall,
    };
    total / n as u32
}

fn obfs2(c: &mut Criterion) {
    let mut g = c.benchmark_group("obfs2_ns_per_secret");
    let mut wire = [0u8; 64];
    for (i, b) in wire.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(151).wrapping_add(7);
    }
    let init = ObfuscatedInit::new(wire);
    for n in [1usize, 10_000] {
        let table = UserTable::new(secrets(n));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter_custom(|iters| {
                per_secret(n, iters, || {
                    let r = match_init(&table, black_box(&init), None, TagSet::ALL);
                    assert!(r.is_err());
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, obfs2, fake_tls, components);
criterion_main!(benches);

fn fake_tls(c: &mut Criterion) {
    let mut g = c.benchmark_group("fake_tls_ns_per_secret");
    let policy = TlsPolicy {
        allowed_domains: vec!["example.com".into()],
        ..TlsPolicy::default()
    };
    for hello_len in [517usize, 1800] {
        let hello = build_client_hello(
            &[0xee; 16],
            &ClientHelloParams {
                timestamp: 1_700_000_000,
                session_id: &[1; 32],
                sni: Some("example.com"),
                alpn: &[b"h2"],
                key_share: &[9; 32],
                total_len: Some(hello_len),
            },
        )
        .expect("buildable hello");
        for n in [1usize, 10_000] {
            let table = UserTable::new(secrets(n));
            let id = BenchmarkId::new(format!("hello{hello_len}"), n);
            g.bench_with_input(id, &n, |b, &n| {
                b.iter_custom(|iters| {
                    per_secret(n, iters, || {
                        let r = FakeTlsHello::validate(
                            black_box(&hello),
                            &table,
                            1_700_000_000,
                            &policy,
                        );
                        assert_eq!(r, Err(HelloError::NoMatchingSecret));
                    })
                })
            });
        }
    }
    g.finish();
}

fn components(c: &mut Criterion) {
    use aes::cipher::{BlockEncrypt, KeyInit};
    let mut g = c.benchmark_group("components");
    let block = sha2::digest::generic_array::GenericArray::from([7u8; 64]);
    g.bench_function("sha256_compress_1_block", |b| {
        b.iter_custom(|iters| {
            per_secret(1, iters, || {
                let mut st = [1u32; 8];
                sha2::compress256(&mut st, std::slice::from_ref(black_box(&block)));
                black_box(st);
            })
        })
    });
    g.bench_function("aes256_key_expand_plus_1_block", |b| {
        b.iter_custom(|iters| {
            per_secret(1, iters, || {
                let a = aes::Aes256Enc::new(&black_box([3u8; 32]).into());
                let mut blk = aes::Block::from([1u8; 16]);
                a.encrypt_block(&mut blk);
                black_box(blk);
            })
        })
    });
    g.finish();
}
