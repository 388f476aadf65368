use super::*;
use proto::socks::BoundAddr;

fn cfg(upstreams: &str, general: &str) -> Config {
    let text = format!(
        "[general]\nuse_middle_proxy = false\n{general}\n\
         [access.users]\nu = \"00112233445566778899aabbccddeeff\"\n{upstreams}"
    );
    config::parse_str(&text).expect("config").config
}

fn ups(c: &Config) -> Upstreams {
    Upstreams::new(c, Stats::new(SystemTime::now()))
}

fn pick_counts(u: &Upstreams, n: usize) -> Vec<usize> {
    let set = u.set.load_full();
    let mut counts = vec![0; set.slots.len()];
    for _ in 0..n {
        if let Some(i) = Upstreams::select(&set, Some(1)) {
            counts[i] += 1;
        }
    }
    counts
}

#[test]
fn default_direct_and_disabled_entries() {
    let u = ups(&cfg("", ""));
    let rows = u.try_snapshot().expect("snapshot");
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].route_kind.as_str(), rows[0].address.as_str()),
        ("direct", "direct")
    );
    assert_eq!(rows[0].dc.len(), 5);
    assert!(rows[0]
        .dc
        .iter()
        .all(|d| d.ip_preference == IpPreference::Unknown));

    let u = ups(&cfg(
        "[[upstreams]]\ntype = \"direct\"\nenabled = false\n[[upstreams]]\ntype = \"socks5\"\naddress = \"127.0.0.1:1\"\n",
        "",
    ));
    let rows = u.try_snapshot().expect("snapshot");
    assert_eq!(
        rows.len(),
        1,
        "disabled upstreams are not in the runtime set"
    );
    assert_eq!(rows[0].route_kind.as_str(), "socks5");
}

#[test]
fn weighted_choice_skips_unhealthy_and_scoped() {
    let u = ups(&cfg(
        "[[upstreams]]\ntype = \"direct\"\nweight = 1\n\
         [[upstreams]]\ntype = \"socks5\"\naddress = \"127.0.0.1:1\"\nweight = 9\n\
         [[upstreams]]\ntype = \"socks4\"\naddress = \"127.0.0.1:2\"\nweight = 50\nscopes = \"premium\"\n",
        "",
    ));
    let c = pick_counts(&u, 4000);
    assert_eq!(c[2], 0, "scoped upstreams never serve unscoped sessions");
    assert!(c[1] > c[0] * 4, "weights respected: {c:?}");
    assert!(c[0] > 0);
    // Unhealthy: excluded while a healthy one exists.
    u.set.load().slots[1].entry.health.lock().healthy = false;
    assert_eq!(pick_counts(&u, 500), vec![500, 0, 0]);
    // All unhealthy: still pick among unscoped ones rather than refuse.
    u.set.load().slots[0].entry.health.lock().healthy = false;
    let c = pick_counts(&u, 500);
    assert_eq!(c[0] + c[1], 500);
    assert_eq!(c[2], 0);
}

#[test]
fn latency_scales_weights() {
    let u = ups(&cfg(
        "[[upstreams]]\ntype = \"direct\"\n[[upstreams]]\ntype = \"socks5\"\naddress = \"127.0.0.1:1\"\n",
        "",
    ));
    let set = u.set.load_full();
    let v4: SocketAddr = "1.2.3.4:443".parse().unwrap();
    set.slots[0].entry.health.lock().dc[1].observe(v4, true, Some(Duration::from_millis(10)));
    set.slots[1].entry.health.lock().dc[1].observe(v4, true, Some(Duration::from_millis(500)));
    let mut c = [0usize; 2];
    for _ in 0..2000 {
        c[Upstreams::select(&set, Some(1)).expect("pick")] += 1;
    }
    assert!(c[0] > c[1] * 10, "fast upstream preferred: {c:?}");
}

#[test]
fn unmeasured_upstream_is_not_starved() {
    let u = ups(&cfg(
        "[[upstreams]]\ntype = \"direct\"\n[[upstreams]]\ntype = \"socks5\"\naddress = \"127.0.0.1:1\"\n",
        "",
    ));
    let set = u.set.load_full();
    let v4: SocketAddr = "1.2.3.4:443".parse().unwrap();
    set.slots[0].entry.health.lock().dc[1].observe(v4, true, Some(Duration::from_micros(300)));
    let c = pick_counts(&u, 2000);
    assert!(
        c[1] > 600 && c[0] > 600,
        "equal weights, one unmeasured: {c:?}"
    );
}

#[test]
fn failures_reach_the_threshold() {
    let u = ups(&cfg(
        "[[upstreams]]\ntype = \"socks5\"\naddress = \"127.0.0.1:1\"\n",
        "upstream_unhealthy_fail_threshold = 3\n",
    ));
    let set = u.set.load_full();
    let err = UpstreamError::Timeout("x".into());
    for i in 1..=3 {
        u.record_failure(0, &set.slots[0], set.policy.threshold, &err);
        let h = set.slots[0].entry.health.lock();
        assert_eq!(h.fails, i);
        assert_eq!(h.healthy, i < 3);
    }
    assert_eq!(
        u.stats
            .events()
            .recent(10)
            .iter()
            .filter(|e| e.event_type == "upstream.unhealthy")
            .count(),
        1
    );
}

#[test]
fn reload_keeps_state_of_unchanged_entries() {
    let a = "[[upstreams]]\ntype = \"socks5\"\naddress = \"127.0.0.1:1\"\nweight = 2\n";
    let u = ups(&cfg(a, ""));
    u.set.load().slots[0].entry.health.lock().fails = 4;
    // Re-weighted and a new entry added: the SOCKS entry keeps its state.
    u.apply(&cfg(
        "[[upstreams]]\ntype = \"direct\"\n[[upstreams]]\ntype = \"socks5\"\naddress = \"127.0.0.1:1\"\nweight = 8\n",
        "",
    ));
    let rows = u.try_snapshot().expect("snapshot");
    assert_eq!((rows[1].weight, rows[1].fails), (8, 4));
    assert_eq!(rows[0].fails, 0);
    // Changed connection settings: fresh state.
    u.apply(&cfg(
        "[[upstreams]]\ntype = \"socks5\"\naddress = \"127.0.0.1:2\"\n",
        "",
    ));
    let rows = u.try_snapshot().expect("snapshot");
    assert_eq!((rows.len(), rows[0].fails), (1, 0));
}

#[test]
fn snapshot_never_blocks() {
    let u = ups(&cfg("", ""));
    let set = u.set.load_full();
    let guard = set.slots[0].entry.health.lock();
    assert!(u.try_snapshot().is_none(), "busy row: source unavailable");
    drop(guard);
    assert!(u.try_snapshot().is_some());
}

#[test]
fn ip_preference_from_observations() {
    let v4: SocketAddr = "1.2.3.4:443".parse().unwrap();
    let v6: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
    let mut d = DcState::default();
    assert_eq!(d.preference(), IpPreference::Unknown);
    d.observe(v4, true, Some(Duration::from_millis(100)));
    assert_eq!(d.preference(), IpPreference::PreferV4);
    d.observe(v6, true, None);
    assert_eq!(d.preference(), IpPreference::BothWork);
    d.observe(v4, false, None);
    assert_eq!(d.preference(), IpPreference::PreferV6);
    d.observe(v6, false, None);
    assert_eq!(d.preference(), IpPreference::Unavailable);
    d.observe(v4, true, Some(Duration::from_millis(200)));
    let ema = d.ema_ms.expect("ema");
    assert!(
        (ema - 130.0).abs() < 1e-6,
        "EMA 0.7*100 + 0.3*200, got {ema}"
    );
}

#[test]
fn bnd_classification() {
    let now = SystemTime::now();
    let t4: SocketAddr = "149.154.167.51:443".parse().unwrap();
    let c = |b: BoundAddr| classify_bnd(0, &b, t4, now);
    let ok = c(BoundAddr::Ip("203.0.113.7:40000".parse().unwrap()));
    // 203.0.113.0/24 is documentation space: bogon.
    assert_eq!(ok.addr_state, BndAddrStatus::Bogon);
    let ok = c(BoundAddr::Ip("8.8.8.8:40000".parse().unwrap()));
    assert_eq!(
        (ok.addr_state, ok.port_state),
        (BndAddrStatus::Ok, BndPortStatus::Ok)
    );
    let z = c(BoundAddr::Ip("0.0.0.0:0".parse().unwrap()));
    assert_eq!(
        (z.addr_state, z.port_state),
        (BndAddrStatus::Bogon, BndPortStatus::Zero)
    );
    let p = c(BoundAddr::Ip("10.1.2.3:5".parse().unwrap()));
    assert_eq!(p.addr_state, BndAddrStatus::Bogon);
    let fam = c(BoundAddr::Ip("[2a00:1450::1]:5".parse().unwrap()));
    assert_eq!(
        fam.addr_state,
        BndAddrStatus::Bogon,
        "other family than the target"
    );
    let d = c(BoundAddr::Domain(b"proxy.example".to_vec(), 7));
    assert_eq!(
        (d.addr_state, d.port_state, d.addr),
        (BndAddrStatus::Bogon, BndPortStatus::Ok, None)
    );
}

#[test]
fn hard_errors() {
    let refused = UpstreamError::Connect {
        addr: "x".into(),
        source: std::io::ErrorKind::ConnectionRefused.into(),
    };
    assert!(refused.is_hard());
    assert!(UpstreamError::Socks(SocksError::AuthFailed(1)).is_hard());
    assert!(!UpstreamError::Socks(SocksError::ConnectFailed(5)).is_hard());
    assert!(!UpstreamError::Timeout("x".into()).is_hard());
    assert!(!UpstreamError::Malformed("x").is_hard());
}

#[test]
fn every_validated_cipher_is_supported_by_the_client() {
    let k16 = "AAECAwQFBgcICQoLDA0ODw==";
    let k32 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    for m in config::SS_CIPHERS {
        let pw = match *m {
            "2022-blake3-aes-128-gcm" => k16,
            m if m.starts_with("2022-") => k32,
            _ => "pw",
        };
        let url = format!("ss://{m}:{pw}@127.0.0.1:8388");
        config::ShadowsocksUrl::parse(&url).expect("config accepts");
        assert!(super::ss::SsTarget::parse(&url, None).is_ok(), "{m}");
    }
}
