//! Arbitrary bytes, in arbitrary chunks, through the server handshake state machine with
//! every mode enabled. The first byte picks the chunk size. Whatever happens, a decision
//! reports exactly the bytes fed.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use proto::{
    DcSet, FlightPlan, FlightTable, HandshakeContext, Now, ServerHandshake, ShardedReplayCache,
    Step, TagSet, TlsPolicy, Transport, UserTable,
};

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let table = UserTable::new([[1u8; 16], [2u8; 16]]);
    let tls = TlsPolicy {
        allowed_domains: vec!["example.com".into()],
        ..TlsPolicy::default()
    };
    let dcs = DcSet::standard();
    let obfs = ShardedReplayCache::new(64, Duration::from_secs(120), 1);
    let tlsr = ShardedReplayCache::new(64, Duration::from_secs(240), 1);
    let flights = FlightTable {
        plans: Vec::new(),
        fallback: FlightPlan {
            cipher: 0x1301,
            versions_first: false,
            app_data_len: 64,
            jitter: 0,
            compact_len: 85,
            delay_ms: (0, 0),
        },
    };
    let ctx = HandshakeContext {
        table: &table,
        tls: &tls,
        tls_enabled: true,
        plain_enabled: true,
        plain_tags: TagSet::for_modes(true, true, true, Transport::PlainTcp),
        tls_tags: TagSet::for_modes(true, true, true, Transport::InsideTls),
        dcs: Some(&dcs),
        obfs_replay: &obfs,
        tls_replay: &tlsr,
        flights: &flights,
        hello_delay_ms: None,
        full_flight: None,
        hint: None,
    };
    let now = Now {
        unix_secs: 1_800_000_000,
        mono: Instant::now(),
    };
    let mut rng = |b: &mut [u8]| b.fill(7);
    let mut hs = ServerHandshake::new(ctx);
    let step = usize::from(first % 64) + 1;
    let mut fed = 0;
    for chunk in rest.chunks(step) {
        fed += chunk.len();
        let mut s = hs.feed(chunk, now, &mut rng);
        while let Step::Send { .. } = s {
            s = hs.feed(&[], now, &mut rng);
        }
        match s {
            Step::NeedMore => {}
            Step::Reject(r) => {
                assert_eq!(r.consumed, fed);
                return;
            }
            // `Send` was drained above.
            Step::Accept(_) | Step::Send { .. } => return,
        }
    }
    assert_eq!(hs.eof().consumed, fed);
});
