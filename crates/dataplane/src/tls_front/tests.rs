//! Profile → plan derivation and the JSON store.

use super::*;

fn profile() -> Profile {
    Profile {
        version: PROFILE_VERSION,
        domain: "front.test".into(),
        origin: "127.0.0.1:443".into(),
        fetched_at_unix: 1,
        legacy_version: 0x0303,
        selected_version: TLS13,
        cipher: 0x1302,
        extensions: vec![EXT_SUPPORTED_VERSIONS, EXT_KEY_SHARE],
        key_share_group: Some(0x1d),
        alpn: None,
        ccs_count: 1,
        records: vec![(0x17, 2000), (0x17, 300), (0x17, 53)],
        flight_total: 2353,
        tail_records: 0,
        connect_ms: 10,
        flight_ms: 14,
    }
}

#[test]
fn plan_follows_the_origin() {
    let p = profile().plan(&mut rand::thread_rng());
    assert_eq!(p.cipher, 0x1302);
    assert!(p.versions_first);
    assert_eq!(p.app_data_len, 2353);
    assert!(p.jitter <= MAX_JITTER);
    assert_eq!(p.delay_ms, (4, 6));
    let mut ks_first = profile();
    ks_first.extensions.reverse();
    assert!(!ks_first.plan(&mut rand::thread_rng()).versions_first);
}

#[test]
fn compact_flight_is_the_origins_resumed_flight() {
    let mut rng = rand::thread_rng();
    // EE, Certificate, CertificateVerify, Finished in records of their own (OpenSSL), then
    // a ticket-like tail record: EE + Finished.
    let mut p = profile();
    p.records = vec![
        (0x17, 40),
        (0x17, 1800),
        (0x17, 286),
        (0x17, 69),
        (0x17, 250),
    ];
    p.tail_records = 1;
    assert_eq!(p.plan(&mut rng).compact_len, 40 + 69);
    // Coalesced records (first one too large for a lone EE): computed for the suite.
    assert_eq!(
        profile().plan(&mut rng).compact_len,
        proto::resumed_flight_len(0x1302, EE_BODY_ALPN_H2)
    );
    // A TLS 1.2 origin: nothing to copy, the emulated 1.3 flight's size.
    let mut old = profile();
    old.selected_version = 0x0303;
    old.records = vec![(0x16, 40), (0x16, 1800), (0x16, 300)];
    let plan = old.plan(&mut rng);
    assert_eq!(
        plan.compact_len,
        proto::resumed_flight_len(plan.cipher, EE_BODY_ALPN_H2)
    );
    assert!(plan.compact_len < plan.app_data_len / 4);
}

#[test]
fn random_plans_vary_and_stay_plausible() {
    let mut rng = rand::thread_rng();
    let plans: Vec<_> = (0..32).map(|_| random_plan(&mut rng)).collect();
    assert!(plans
        .iter()
        .all(|p| (2300..=5200).contains(&p.app_data_len)));
    assert!(plans
        .iter()
        .any(|p| p.app_data_len != plans[0].app_data_len));
    assert!(plans.iter().all(|p| (80..=110).contains(&p.compact_len)));
}

#[test]
fn store_then_load_roundtrip() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert!(load_profile(dir.path(), "front.test")
        .expect("no file")
        .is_none());
    store_profile(dir.path(), &profile()).expect("store");
    let back = load_profile(dir.path(), "front.test").expect("load");
    assert_eq!(back, Some(profile()));
    assert!(matches!(
        load_profile(dir.path(), "../etc"),
        Err(StoreError::BadDomain(_))
    ));
}

#[test]
fn table_uses_profiles_and_stable_random_plans() {
    let f = Fronts::new();
    f.set_domains(vec!["front.test".into(), "other.test".into()]);
    let before = f.flights().plan(Some("other.test")).clone();
    f.set_profile(profile());
    let t = f.flights();
    assert_eq!(t.plan(Some("front.test")).app_data_len, 2353);
    assert_eq!(t.plan(Some("other.test")), &before);
    assert_eq!(f.profiled(), 1);
}

#[test]
fn front_dir_is_next_to_the_config() {
    assert_eq!(
        front_dir(Path::new("/etc/mtproxyd/config.toml"), "tlsfront"),
        PathBuf::from("/etc/mtproxyd/tlsfront")
    );
    assert_eq!(
        front_dir(Path::new("config.toml"), "/var/x"),
        PathBuf::from("/var/x")
    );
}
