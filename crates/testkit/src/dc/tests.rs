use super::*;
use crate::client::{TestClient, TestConn};

const T: Duration = Duration::from_secs(10);

#[tokio::test]
async fn echo_each_tag_records_tag_and_dc() {
    let dc = TestDc::start(DcMode::Echo).await.unwrap();
    for (i, (tag, idx)) in [
        (Tag::Abridged, 2i16),
        (Tag::Intermediate, -4),
        (Tag::Padded, 203),
    ]
    .into_iter()
    .enumerate()
    {
        let mut c = TestClient::connect_dc(dc.addr(), tag, idx).await.unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|x| (x * 7 + i as u32) as u8).collect();
        c.send(&data).await.unwrap();
        assert_eq!(c.recv_exact(data.len()).await.unwrap(), data);
        let s = &dc.sessions()[i];
        assert_eq!((s.tag, s.dc), (Some(tag), idx));
        assert_eq!(s.bytes_in, data.len() as u64);
    }
    assert_eq!(dc.counters().sessions, 3);
}

#[tokio::test]
async fn sink_counts_and_bad_init_is_recorded() {
    let dc = TestDc::start(DcMode::Sink).await.unwrap();
    let mut c = TestClient::connect_dc(dc.addr(), Tag::Padded, 1)
        .await
        .unwrap();
    c.send(&[5u8; 12345]).await.unwrap();
    assert!(dc.wait_until(T, |d| d.counters().bytes_in == 12345).await);
    c.shutdown().await.unwrap();
    assert!(dc.wait_until(T, |d| d.sessions()[0].closed).await);

    // A secret-keyed init seen by a DC (which uses no secret) has a garbage tag.
    let wrong = crate::client::obfs::new_init(Tag::Padded, 2, Some(&[1; 16]));
    let out = crate::client::probe::send_probe(dc.addr(), &wrong.wire, T, false)
        .await
        .unwrap();
    assert!(out.closed);
    assert_eq!(dc.counters().bad_inits, 1);
    assert_eq!(dc.sessions()[1].tag, None);
}

async fn req_pq_round_trip(c: &mut TestConn, dc: &TestDc) {
    let nonce: [u8; 16] = rand::random();
    c.send_packet(&mtproto::req_pq_multi_message(&nonce))
        .await
        .unwrap();
    let reply = c.recv_packet().await.unwrap();
    let msg = mtproto::parse_plain(&reply).unwrap();
    let res = mtproto::parse_res_pq(&msg.body).unwrap();
    assert_eq!(res.nonce, nonce);
    let logged = dc.messages().into_iter().find_map(|m| match m {
        DcMessage::ReqPq {
            nonce: n,
            server_nonce,
            ..
        } if n == nonce => Some(server_nonce),
        _ => None,
    });
    assert_eq!(logged, Some(res.server_nonce));
}

#[tokio::test]
async fn mtproto_mode_answers_req_pq_multi_in_every_framing() {
    let dc = TestDc::start(DcMode::MtProto).await.unwrap();
    for tag in [Tag::Abridged, Tag::Intermediate, Tag::Padded] {
        let mut c = TestClient::connect_dc(dc.addr(), tag, 2).await.unwrap();
        req_pq_round_trip(&mut c, &dc).await;
        req_pq_round_trip(&mut c, &dc).await;
    }
    assert_eq!(dc.messages().len(), 6);
    // An encrypted-looking message is logged, not answered.
    let mut c = TestClient::connect_dc(dc.addr(), Tag::Intermediate, 2)
        .await
        .unwrap();
    c.send_packet(&[1u8; 40]).await.unwrap();
    assert!(
        dc.wait_until(T, |d| d
            .messages()
            .iter()
            .any(|m| matches!(m, DcMessage::Other { len: 40, .. })))
            .await
    );
}

/// A deliberately small proxy written in the test (no `proto`): it accepts fake-TLS or plain
/// obfuscated2 with one secret, opens an obfuscated2 link to the DC and relays. It exists to
/// check that the test client, the test DC and the docs/PROTOCOL.md vectors agree end to end.
mod mini_proxy {
    use super::*;
    use crate::client::faketls;

    pub async fn start(secret: [u8; 16], dc_addr: SocketAddr) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let _ = handle(s, secret, dc_addr).await;
                });
            }
        });
        addr
    }

    /// Reads application-data payloads until `n` stream bytes are buffered.
    async fn tls_fill(s: &mut TcpStream, buf: &mut Vec<u8>, n: usize) -> io::Result<()> {
        while buf.len() < n {
            let mut hdr = [0u8; 5];
            s.read_exact(&mut hdr).await?;
            let mut body = vec![0u8; usize::from(u16::from_be_bytes([hdr[3], hdr[4]]))];
            s.read_exact(&mut body).await?;
            if hdr[0] == 0x17 {
                buf.extend_from_slice(&body);
            }
        }
        Ok(())
    }

    async fn handle(mut s: TcpStream, secret: [u8; 16], dc_addr: SocketAddr) -> io::Result<()> {
        let mut first = [0u8; 5];
        s.read_exact(&mut first).await?;
        let tls = first[..3] == [0x16, 0x03, 0x01];
        let mut stream_buf = Vec::new();
        if tls {
            let mut rec = first.to_vec();
            rec.resize(5 + usize::from(u16::from_be_bytes([first[3], first[4]])), 0);
            s.read_exact(&mut rec[5..]).await?;
            if faketls::check_client_hello(&secret, &rec).is_none() {
                return Ok(());
            }
            let d: [u8; 32] = rec[11..43].try_into().map_err(io::Error::other)?;
            let sid = faketls::client_hello_session_id(&rec)
                .unwrap_or_default()
                .to_vec();
            let resp = faketls::build_server_hello(&secret, &d, &sid, &[9; 32], &[0; 1000]);
            s.write_all(&resp).await?;
            tls_fill(&mut s, &mut stream_buf, 64).await?;
        } else {
            stream_buf.extend_from_slice(&first);
            stream_buf.resize(64, 0);
            s.read_exact(&mut stream_buf[5..]).await?;
        }
        let init: [u8; 64] = stream_buf[..64].try_into().map_err(io::Error::other)?;
        let got = obfs::open_init(&init, Some(&secret));
        let Some(tag) = got.tag else { return Ok(()) };
        let (mut cdec, mut cenc) = (got.dec, got.enc);
        let up = obfs::new_init(tag, got.dc, None);
        let mut dc = TcpStream::connect(dc_addr).await?;
        let (mut tenc, mut tdec) = (up.enc, up.dec);
        let mut first_out = up.wire.to_vec();
        let mut rest = stream_buf[64..].to_vec();
        cdec.apply_keystream(&mut rest);
        tenc.apply_keystream(&mut rest);
        first_out.extend_from_slice(&rest);
        dc.write_all(&first_out).await?;
        let (mut cr, mut cw) = s.into_split();
        let (mut dr, mut dw) = dc.into_split();
        let up_task = tokio::spawn(async move {
            let mut buf = Vec::new();
            loop {
                if tls {
                    buf.clear();
                    let mut hdr = [0u8; 5];
                    if cr.read_exact(&mut hdr).await.is_err() {
                        break;
                    }
                    let mut body = vec![0u8; usize::from(u16::from_be_bytes([hdr[3], hdr[4]]))];
                    if cr.read_exact(&mut body).await.is_err() || hdr[0] == 0x15 {
                        break;
                    }
                    if hdr[0] != 0x17 {
                        continue;
                    }
                    buf = body;
                } else {
                    buf.resize(16384, 0);
                    match cr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.truncate(n),
                    }
                }
                cdec.apply_keystream(&mut buf);
                tenc.apply_keystream(&mut buf);
                if dw.write_all(&buf).await.is_err() {
                    break;
                }
            }
            let _ = dw.shutdown().await;
        });
        let mut buf = vec![0u8; 16384];
        loop {
            let n = match dr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let data = &mut buf[..n];
            tdec.apply_keystream(data);
            cenc.apply_keystream(data);
            let mut out = Vec::with_capacity(n + 5);
            if tls {
                faketls::wrap_app_data(data, 16384, &mut out);
            } else {
                out.extend_from_slice(data);
            }
            if cw.write_all(&out).await.is_err() {
                break;
            }
        }
        up_task.abort();
        Ok(())
    }
}

#[tokio::test]
async fn client_through_mini_proxy_every_mode() {
    use crate::client::{HelloShape, Mode, TlsOptions};
    let secret: [u8; 16] = rand::random();
    let dc = TestDc::start(DcMode::MtProto).await.unwrap();
    let proxy = mini_proxy::start(secret, dc.addr()).await;
    let mut small = TlsOptions::new("example.com");
    small.shape = HelloShape::Small517;
    small.send_ccs = false;
    small.init_merged = false;
    let modes = [
        Mode::Abridged,
        Mode::Intermediate,
        Mode::Secure,
        Mode::Tls(TlsOptions::new("example.com")),
        Mode::Tls(small),
    ];
    for (i, mode) in modes.into_iter().enumerate() {
        let tag = mode.tag();
        let mut c = TestClient::connect(proxy, mode, secret, 2).await.unwrap();
        req_pq_round_trip(&mut c, &dc).await;
        req_pq_round_trip(&mut c, &dc).await;
        let s = &dc.sessions()[i];
        assert_eq!((s.tag, s.dc), (Some(tag), 2));
    }
}

#[tokio::test]
async fn tls_client_detects_wrong_secret_and_echo_is_exact() {
    use crate::client::{ClientError, Mode, TlsOptions};
    let secret: [u8; 16] = rand::random();
    let dc = TestDc::start(DcMode::Echo).await.unwrap();
    let proxy = mini_proxy::start(secret, dc.addr()).await;
    // Wrong secret: the mini proxy drops the connection instead of answering.
    let err = TestClient::connect(proxy, Mode::Tls(TlsOptions::new("x.org")), [0; 16], 2)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::NotServerHello(ref b) if b.is_empty()),
        "{err}"
    );
    // Large echo through TLS records in both directions.
    let (mut r, mut w) = TestClient::connect(proxy, Mode::Tls(TlsOptions::new("x.org")), secret, 2)
        .await
        .unwrap()
        .into_split();
    let data: Vec<u8> = (0..300_000u32).map(|x| (x % 251) as u8).collect();
    let d2 = data.clone();
    let writer = tokio::spawn(async move { w.send(&d2).await });
    assert_eq!(r.recv_exact(data.len()).await.unwrap(), data);
    writer.await.unwrap().unwrap();
}

/// Runs the real-library scripts of tests-py/ against the mini proxy (checks the scripts
/// themselves). Needs `MTPROXYD_PY` pointing at a Python with tests-py/requirements.txt:
/// `MTPROXYD_PY=... cargo test -p testkit -- --ignored python_scripts`.
#[tokio::test]
#[ignore = "needs MTPROXYD_PY with telethon + kurigram installed"]
async fn python_scripts_against_mini_proxy() {
    let secret: [u8; 16] = rand::random();
    let dc = TestDc::start(DcMode::MtProto).await.unwrap();
    let proxy = mini_proxy::start(secret, dc.addr()).await;
    let hex_secret = hex::encode(secret);
    let domain_hex = hex::encode("example.com");
    let cases: Vec<(&str, Vec<String>, Tag)> = vec![
        (
            "telethon_interop.py",
            vec![
                "--conn".into(),
                "abridged".into(),
                "--secret".into(),
                hex_secret.clone(),
            ],
            Tag::Abridged,
        ),
        (
            "telethon_interop.py",
            vec![
                "--conn".into(),
                "intermediate".into(),
                "--secret".into(),
                hex_secret.clone(),
            ],
            Tag::Intermediate,
        ),
        (
            "telethon_interop.py",
            vec![
                "--conn".into(),
                "randomized".into(),
                "--secret".into(),
                format!("dd{hex_secret}"),
            ],
            Tag::Padded,
        ),
        (
            "kurigram_interop.py",
            vec!["--secret".into(), hex_secret.clone()],
            Tag::Abridged,
        ),
        (
            "kurigram_interop.py",
            vec!["--secret".into(), format!("dd{hex_secret}")],
            Tag::Padded,
        ),
        (
            "kurigram_interop.py",
            vec!["--secret".into(), format!("ee{hex_secret}{domain_hex}")],
            Tag::Padded,
        ),
    ];
    for (i, (script, mut args, tag)) in cases.into_iter().enumerate() {
        args.extend([
            "--port".into(),
            proxy.port().to_string(),
            "--dc".into(),
            "-3".into(),
        ]);
        let r = crate::py::run_interop(script, &args, Duration::from_secs(60))
            .await
            .unwrap();
        assert!(r.ok, "{script} {args:?}: {}\n{}", r.json, r.stderr);
        let s = &dc.sessions()[i];
        assert_eq!((s.tag, s.dc), (Some(tag), -3), "{script} {args:?}");
        let logged = dc.messages().into_iter().find_map(|m| match m {
            DcMessage::ReqPq {
                nonce,
                server_nonce,
                session,
                ..
            } if session == s.id => Some((hex::encode(nonce), hex::encode(server_nonce))),
            _ => None,
        });
        let want = (
            r.json["nonce"].as_str().unwrap_or_default().to_owned(),
            r.json["server_nonce"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
        assert_eq!(logged, Some(want), "{script}: {}", r.json);
    }
}
