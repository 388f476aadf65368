//! Cost of fingerprinting one ClientHello (JA3 + JA4: one walk, one MD5, two SHA-256 and a
//! few small strings), paid once per TLS connection by the data plane.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use proto::{build_client_hello, tls_fingerprint, ClientHelloParams};

fn bench(c: &mut Criterion) {
    let hello = build_client_hello(
        &[0x42; 16],
        &ClientHelloParams {
            timestamp: 1_800_000_000,
            session_id: &[7; 32],
            sni: Some("example.com"),
            alpn: &[b"h2", b"http/1.1"],
            key_share: &[9; 32],
            total_len: Some(517),
        },
    )
    .expect("hello");
    c.bench_function("tls_fingerprint_517", |b| {
        b.iter(|| tls_fingerprint(black_box(&hello)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
