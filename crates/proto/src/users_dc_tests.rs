//! The DC filter of the multi-user matcher: it skips candidates whose DC is not routable and
//! cuts wrong-user acceptances by orders of magnitude (deterministic randomness, no flakes).

use super::*;
use crate::obfs2::build_client_init;

/// xorshift64: a fixed sequence per seed, so the counts below never change between runs.
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn fill(&mut self, b: &mut [u8]) {
        for chunk in b.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

fn secret(i: u32) -> Secret {
    let mut s = [0u8; 16];
    s[..4].copy_from_slice(&i.to_le_bytes());
    s[4] = 0xa5;
    s
}

fn opts(hint: Option<usize>, dcs: Option<&DcSet>, max_tries: usize) -> MatchOptions<'_> {
    MatchOptions {
        hint,
        allowed: TagSet::ALL,
        max_tries,
        dcs,
    }
}

#[test]
fn unroutable_dc_is_not_this_user_and_matching_continues() {
    let t = UserTable::new((0..6).map(secret));
    let dcs = DcSet::standard();
    let mut rng = Xorshift(7);
    let good = build_client_init(
        &mut |b: &mut [u8]| rng.fill(b),
        &secret(4),
        ProtoTag::Padded,
        2,
    )
    .expect("init");
    let init = ObfuscatedInit::new(good.wire);
    let m = match_init_with(&t, &init, opts(Some(1), Some(&dcs), usize::MAX)).expect("matches");
    assert_eq!((m.user_index, m.dc, m.tries), (4, 2, 5));
    let odd = build_client_init(
        &mut |b: &mut [u8]| rng.fill(b),
        &secret(4),
        ProtoTag::Padded,
        777,
    )
    .expect("init");
    let init = ObfuscatedInit::new(odd.wire);
    assert_eq!(
        match_init_with(&t, &init, opts(None, Some(&dcs), usize::MAX)).map(|m| m.user_index),
        Err(InitReject::NoMatchingSecret)
    );
    // Without a filter (and with 777 added to it) the same init is accepted.
    assert!(match_init_with(&t, &init, opts(None, None, usize::MAX)).is_ok());
    let more = dcs.with([777]);
    assert!(match_init_with(&t, &init, opts(None, Some(&more), usize::MAX)).is_ok());
}

/// A wrong secret is accepted when it decrypts bytes 56..60 to one of the 3 tags
/// (probability 3/2^32 per candidate, ≈ users·7e-10 per connection). Measuring that directly
/// needs ~10^10 candidate evaluations, so this test measures what happens *given* such a
/// chance tag match, which is exactly what the DC filter changes: the DC bytes of a wrong
/// decryption are uniform noise. Each sample is an init sealed for a random user of a
/// 10,000-user table with a uniformly random DC (the noise a chance match carries), checked
/// at that one candidate. Before: every sample is accepted. After: only those whose noise
/// lands in the 24-index standard set (expected share 24/65536).
#[test]
fn dc_filter_cuts_chance_acceptances_by_orders_of_magnitude() {
    const USERS: u32 = 10_000;
    const SAMPLES: usize = 20_000;
    let t = UserTable::new((0..USERS).map(secret));
    let dcs = DcSet::standard();
    let mut rng = Xorshift(0x1234_5678_9abc_def1);
    let (mut before, mut after) = (0usize, 0usize);
    for _ in 0..SAMPLES {
        let who = (rng.next() % u64::from(USERS)) as usize;
        let dc = rng.next() as u16 as i16;
        let tag = ProtoTag::ALL[(rng.next() % 3) as usize];
        let Ok(sealed) = build_client_init(
            &mut |b: &mut [u8]| rng.fill(b),
            &secret(who as u32),
            tag,
            dc,
        ) else {
            continue;
        };
        let init = ObfuscatedInit::new(sealed.wire);
        // One candidate: the user whose decryption produced the valid tag.
        if match_init_with(&t, &init, opts(Some(who), None, 1)).is_ok() {
            before += 1;
        }
        if match_init_with(&t, &init, opts(Some(who), Some(&dcs), 1)).is_ok() {
            after += 1;
        }
    }
    assert!(
        before >= SAMPLES - 10,
        "every chance tag match was accepted: {before}"
    );
    // Expected ≈ 20,000 · 24/65536 ≈ 7; the fixed seed makes the count exact.
    assert!(after * 100 < before, "before {before}, after {after}");
    assert!(after <= 30, "after {after}");
    let per_conn_before = f64::from(USERS) * 3.0 / 2f64.powi(32);
    let per_conn_after = per_conn_before * after as f64 / before as f64;
    assert!(per_conn_after < per_conn_before / 100.0);
}
