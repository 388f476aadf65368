//! The real binary on the middle-proxy route: testkit clients and the real client libraries
//! reach the DC through a test middle proxy (real handshake, KDF and RPC), which sees each
//! user's ad tag and the clients' addresses; the API's ME endpoints describe that pool.

use testkit::me::{random_proxy_secret, MeFiles, MeOptions, TestMe};

use super::*;

const AD_TAG: [u8; 16] = [0x7a; 16];

struct MeSetup {
    s: Setup,
    me: TestMe,
    _files: MeFiles,
}

async fn setup_me() -> MeSetup {
    let secret = random_proxy_secret();
    let dc = TestDc::start(DcMode::MtProto).await.unwrap();
    let me = TestMe::start(dc.addr(), MeOptions::new(secret.clone()))
        .await
        .unwrap();
    // Every client DC index maps to the default cluster (§7.9): one middle proxy for all.
    let files = MeFiles::write(&secret, Some(2), &[(2, me.addr()), (-2, me.addr())]).unwrap();
    let general = format!(
        "use_middle_proxy = true\n{}ad_tag = \"{}\"\n",
        files.general_keys(),
        hex::encode(AD_TAG)
    );
    let dir = tempfile::tempdir().unwrap();
    let mut s = setup_in(DcMode::MtProto, dir, &general, NO_EMULATION, rand::random()).await;
    // The middle proxy relays to its own DC; keep that one as the setup's DC.
    s.dc = dc;
    let mut c = HttpClient::new(s.api);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut ready = false;
    while !ready && tokio::time::Instant::now() < deadline {
        let g = api_data(&mut c, "/v1/runtime/gates").await;
        ready = g["me_runtime_ready"].as_bool() == Some(true);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "ME pool never ready\n{}", s.daemon.logs());
    MeSetup {
        s,
        me,
        _files: files,
    }
}

#[tokio::test]
async fn every_client_mode_reaches_the_dc_through_the_middle_proxy() {
    let m = setup_me().await;
    let s = &m.s;
    let cases = [
        (Mode::Abridged, 2i16),
        (Mode::Intermediate, -3),
        (Mode::Secure, 4),
        (Mode::Tls(TlsOptions::new(DOMAIN)), 2),
    ];
    for (mode, dc_idx) in cases {
        let what = format!("{mode:?}");
        let mut c = TestClient::connect(s.proxy, mode, s.secret, dc_idx)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}\n{}", s.daemon.logs()));
        for _ in 0..2 {
            req_pq(&mut c, &s.dc)
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}\n{}", s.daemon.logs()));
        }
        let local = c.local_addr();
        let rec =
            m.me.conns()
                .into_iter()
                .find(|r| r.client == local)
                .unwrap_or_else(|| panic!("{what}: the middle proxy saw no {local}"));
        assert_eq!(rec.ad_tag, Some(AD_TAG), "{what}");
        assert_eq!(rec.ours, s.proxy, "{what}");
        assert_eq!(rec.requests, 2, "{what}");
    }
    assert!(s.mask.connections().is_empty());

    // The API describes the pool the clients used. DC 2 served every client (all indexes
    // map to it, §7.9): 1 + 2 shadow writers; DC -2, never used, shrinks to its adaptive
    // minimum of 1 (docs/DECISIONS.md #44). The middle proxy sees exactly those links.
    let mut api = HttpClient::new(s.api);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let (pool, writers) = loop {
        let pool = api_data(&mut api, "/v1/runtime/me_pool_state").await;
        let writers = api_data(&mut api, "/v1/stats/me-writers").await;
        let live =
            m.me.links()
                .iter()
                .filter(|l| l.established && !l.closed)
                .count();
        if pool["data"]["writers"]["total"] == 4 && live == 4 {
            break (pool, writers);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "pool never settled at 4 writers (ME sees {live}): {pool}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(pool["data"]["writers"]["contour"]["active"], 4, "{pool}");
    assert_eq!(
        pool["data"]["generations"]["active_generation"], 1,
        "{pool}"
    );
    let dcs = api_data(&mut api, "/v1/stats/dcs").await;
    let required: Vec<(i64, i64)> = dcs["dcs"]
        .as_array()
        .expect("dcs")
        .iter()
        .map(|d| {
            (
                d["dc"].as_i64().unwrap_or(0),
                d["required_writers"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(required, vec![(-2, 1), (2, 3)], "{dcs}");
    let zero = api_data(&mut api, "/v1/stats/zero/all").await;
    let sent = zero["middle_proxy"]["rpc_proxy_req_signal_sent_total"].as_u64();
    let answers: u64 = m.me.conns().iter().map(|c| c.answers).sum();
    assert_eq!(sent, Some(8), "2 requests x 4 clients: {zero}");
    assert_eq!(
        zero["middle_proxy"]["rpc_proxy_req_signal_response_total"].as_u64(),
        Some(answers),
        "{zero}"
    );
    assert_eq!(writers["middle_proxy_enabled"], true, "{writers}");
    let text = writers.to_string();
    assert!(text.contains(&m.me.addr().to_string()), "{text}");
    assert_eq!(dcs["middle_proxy_enabled"], true, "{dcs}");
    let init = api_data(&mut api, "/v1/runtime/initialization").await;
    assert_eq!(init["me"]["status"], "ready", "{init}");
    let quality = api_data(&mut api, "/v1/runtime/me_quality").await;
    assert_eq!(
        quality["data"]["counters"]["reconnect_success_total"].as_u64(),
        zero["middle_proxy"]["reconnect_success_total"].as_u64(),
        "{quality}"
    );
    let selftest = api_data(&mut api, "/v1/runtime/me-selftest").await;
    assert_eq!(selftest["enabled"], true, "{selftest}");
    assert_eq!(selftest["data"]["kdf"]["errors_total"], 0, "{selftest}");
    let summary = api_data(&mut api, "/v1/stats/summary").await;
    assert!(
        summary.to_string().contains("connections_total"),
        "{summary}"
    );
}

#[tokio::test]
async fn real_client_libraries_reach_the_dc_through_the_middle_proxy() {
    if !client_libraries_present().await {
        return;
    }
    let m = setup_me().await;
    let s = &m.s;
    for (i, (script, args, _)) in client_library_cases(&s.secret).into_iter().enumerate() {
        let r = run_client_library(s, script, &args).await;
        let nonce = r["nonce"].as_str().unwrap_or_default().to_owned();
        let seen = s.dc.messages().into_iter().any(|msg| match msg {
            DcMessage::ReqPq { nonce: n, .. } => hex::encode(n) == nonce,
            _ => false,
        });
        assert!(seen, "{script}: the DC never saw nonce {nonce}");
        let conns = m.me.conns();
        assert_eq!(conns.len(), i + 1, "{script}: one ME connection per client");
        assert!(conns.iter().all(|c| c.ad_tag == Some(AD_TAG)));
    }
}
