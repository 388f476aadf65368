//! Fake-TLS ("ee") pieces of docs/PROTOCOL.md §4, independent of the `proto` crate: the client's
//! ClientHello with its HMAC digest (§4.3), the check of the server's answer (§4.5), and the
//! record layer (§4.6). The server-side halves exist for the vector tests and the in-test mini
//! proxy.

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Max application-data payload a sender should put in one record (§4.6).
pub const MAX_RECORD_PAYLOAD: usize = 16384;

/// The fake ChangeCipherSpec record.
pub const CCS_RECORD: [u8; 6] = [0x14, 0x03, 0x03, 0x00, 0x01, 0x01];

/// Which ClientHello layout to imitate (§12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HelloShape {
    /// Classic tdlib shape: exactly 517 bytes, filled with a padding extension.
    Small517,
    /// Modern shape (~1.7–1.9 KB): X25519MLKEM768 key share plus a random-length ECH extension.
    Large,
}

fn hmac(secret: &[u8; 16], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(secret).expect("hmac takes any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

fn put_ext(out: &mut Vec<u8>, ty: u16, data: &[u8]) {
    out.extend_from_slice(&ty.to_be_bytes());
    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
    out.extend_from_slice(data);
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut v);
    v
}

/// Builds an unsigned ClientHello record (digest bytes `11..43` zero).
pub fn client_hello_template(sni: Option<&str>, alpn: &[&str], shape: HelloShape) -> Vec<u8> {
    let grease = 0x0a0a_u16 + 0x1010 * (rand::random::<u16>() % 15);
    let mut ext = Vec::new();
    put_ext(&mut ext, grease, &[]);
    if let Some(name) = sni {
        let mut d = Vec::new();
        d.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
        d.push(0);
        d.extend_from_slice(&(name.len() as u16).to_be_bytes());
        d.extend_from_slice(name.as_bytes());
        put_ext(&mut ext, 0x0000, &d);
    }
    put_ext(&mut ext, 0x0017, &[]);
    put_ext(&mut ext, 0xff01, &[0]);
    let groups: &[u8] = match shape {
        HelloShape::Small517 => &[0x00, 0x08, 0x00, 0x1d, 0x00, 0x17, 0x00, 0x18, 0x00, 0x19],
        HelloShape::Large => &[0x00, 0x08, 0x11, 0xec, 0x00, 0x1d, 0x00, 0x17, 0x00, 0x18],
    };
    put_ext(&mut ext, 0x000a, groups);
    put_ext(&mut ext, 0x000b, &[0x01, 0x00]);
    put_ext(&mut ext, 0x0023, &[]);
    if !alpn.is_empty() {
        let mut list = Vec::new();
        for p in alpn {
            list.push(p.len() as u8);
            list.extend_from_slice(p.as_bytes());
        }
        let mut d = (list.len() as u16).to_be_bytes().to_vec();
        d.extend_from_slice(&list);
        put_ext(&mut ext, 0x0010, &d);
    }
    put_ext(&mut ext, 0x0005, &[0x01, 0, 0, 0, 0]);
    put_ext(
        &mut ext,
        0x000d,
        &[
            0x00, 0x10, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01, 0x05, 0x03, 0x08, 0x05, 0x05, 0x01,
            0x08, 0x06, 0x06, 0x01,
        ],
    );
    put_ext(&mut ext, 0x0012, &[]);
    let mut shares = Vec::new();
    if shape == HelloShape::Large {
        shares.extend_from_slice(&[0x11, 0xec, 0x04, 0xc0]);
        shares.extend_from_slice(&random_bytes(1216));
    }
    shares.extend_from_slice(&[0x00, 0x1d, 0x00, 0x20]);
    shares.extend_from_slice(&random_bytes(32));
    let mut ks = (shares.len() as u16).to_be_bytes().to_vec();
    ks.extend_from_slice(&shares);
    put_ext(&mut ext, 0x0033, &ks);
    put_ext(&mut ext, 0x002d, &[0x01, 0x01]);
    put_ext(&mut ext, 0x002b, &[0x04, 0x03, 0x04, 0x03, 0x03]);
    put_ext(&mut ext, 0x001b, &[0x02, 0x00, 0x02]);
    if shape == HelloShape::Large {
        // Random ECH payload length, as modern clients do.
        let n = 208 + 32 * (rand::random::<usize>() % 4);
        put_ext(&mut ext, 0xfe0d, &random_bytes(n));
    }

    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[0u8; 32]);
    body.push(32);
    body.extend_from_slice(&random_bytes(32));
    let suites: [u16; 16] = [
        grease, 0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0xc013,
        0xc014, 0x009c, 0x009d, 0x002f, 0x0035,
    ];
    body.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
    for s in suites {
        body.extend_from_slice(&s.to_be_bytes());
    }
    body.extend_from_slice(&[0x01, 0x00]);
    if shape == HelloShape::Small517 {
        // Handshake body (after type+len) must be 508 bytes so the record is 517.
        let without_pad = body.len() + 2 + ext.len();
        if without_pad + 4 <= 508 {
            put_ext(&mut ext, 0x0015, &vec![0u8; 508 - 4 - without_pad]);
        }
    }
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);

    let mut rec = vec![0x16, 0x03, 0x01];
    rec.extend_from_slice(&((body.len() + 4) as u16).to_be_bytes());
    rec.push(0x01);
    rec.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    rec.extend_from_slice(&body);
    rec
}

/// Computes the client digest for a template (bytes `11..43` must be zero) and `ts` (§4.3).
pub fn client_digest(secret: &[u8; 16], zeroed_record: &[u8], ts: u32) -> [u8; 32] {
    let mut d = hmac(secret, &[zeroed_record]);
    for (b, t) in d[28..32].iter_mut().zip(ts.to_le_bytes()) {
        *b ^= t;
    }
    d
}

/// Signs a template in place: writes the digest at offset 11 and returns it.
pub fn sign_client_hello(secret: &[u8; 16], record: &mut [u8], ts: u32) -> [u8; 32] {
    record[11..43].fill(0);
    let d = client_digest(secret, record, ts);
    record[11..43].copy_from_slice(&d);
    d
}

/// Server side of §4.3: returns the timestamp if `record`'s digest was made with `secret`.
pub fn check_client_hello(secret: &[u8; 16], record: &[u8]) -> Option<u32> {
    if record.len() < 43 {
        return None;
    }
    let mut m = record.to_vec();
    m[11..43].fill(0);
    let h = hmac(secret, &[&m]);
    let d = &record[11..43];
    if d[..28] != h[..28] {
        return None;
    }
    let mut ts = [0u8; 4];
    for i in 0..4 {
        ts[i] = d[28 + i] ^ h[28 + i];
    }
    Some(u32::from_le_bytes(ts))
}

/// Session id of a ClientHello record (`None` if the record is too short or malformed).
pub fn client_hello_session_id(record: &[u8]) -> Option<&[u8]> {
    let n = usize::from(*record.get(43)?);
    if n > 32 {
        return None;
    }
    record.get(44..44 + n)
}

/// Server side of §4.5: the three response records with the digest written in.
pub fn build_server_hello(
    secret: &[u8; 16],
    client_digest: &[u8; 32],
    session_id: &[u8],
    x25519_key: &[u8; 32],
    flight: &[u8],
) -> Vec<u8> {
    let n = session_id.len();
    let mut r = vec![0x16, 0x03, 0x03];
    r.extend_from_slice(&((90 + n) as u16).to_be_bytes());
    r.push(0x02);
    r.extend_from_slice(&((86 + n) as u32).to_be_bytes()[1..]);
    r.extend_from_slice(&[0x03, 0x03]);
    r.extend_from_slice(&[0u8; 32]);
    r.push(n as u8);
    r.extend_from_slice(session_id);
    r.extend_from_slice(&[0x13, 0x01, 0x00, 0x00, 0x2e]);
    r.extend_from_slice(&[0x00, 0x33, 0x00, 0x24, 0x00, 0x1d, 0x00, 0x20]);
    r.extend_from_slice(x25519_key);
    r.extend_from_slice(&[0x00, 0x2b, 0x00, 0x02, 0x03, 0x04]);
    r.extend_from_slice(&CCS_RECORD);
    r.extend_from_slice(&[0x17, 0x03, 0x03]);
    r.extend_from_slice(&(flight.len() as u16).to_be_bytes());
    r.extend_from_slice(flight);
    let sr = hmac(secret, &[client_digest, &r]);
    r[11..43].copy_from_slice(&sr);
    r
}

/// Client side of §4.5: checks the server's digest over the complete response bytes.
pub fn verify_server_hello(secret: &[u8; 16], client_digest: &[u8; 32], response: &[u8]) -> bool {
    if response.len() < 43 {
        return false;
    }
    let mut m = response.to_vec();
    m[11..43].fill(0);
    let sr = hmac(secret, &[client_digest, &m]);
    sr[..] == response[11..43]
}

/// Wraps `data` into application-data records of at most `max` payload bytes each.
pub fn wrap_app_data(data: &[u8], max: usize, out: &mut Vec<u8>) {
    for chunk in data.chunks(max.clamp(1, MAX_RECORD_PAYLOAD)) {
        out.extend_from_slice(&[0x17, 0x03, 0x03]);
        out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        out.extend_from_slice(chunk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: [u8; 16] = [
        0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee,
        0xff,
    ];

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }

    fn t1_record() -> Vec<u8> {
        let mut rec: Vec<u8> = (0..517).map(|i| ((7 * i + 3) % 256) as u8).collect();
        rec[..5].copy_from_slice(&[0x16, 0x03, 0x01, 0x02, 0x00]);
        rec[11..43].fill(0);
        rec
    }

    #[test]
    fn vector_t1_client_digest() {
        let mut rec = t1_record();
        let d = sign_client_hello(&S, &mut rec, 1_700_000_000);
        assert_eq!(
            d.to_vec(),
            h("6c1b2630b03cae20e79352b28f533e6a314907d8c8457896a7e673619dead608")
        );
        assert_eq!(check_client_hello(&S, &rec), Some(1_700_000_000));
        assert_eq!(check_client_hello(&[1; 16], &rec), None);
        rec[100] ^= 1;
        assert_eq!(check_client_hello(&S, &rec), None);
    }

    #[test]
    fn vector_t2_server_hello() {
        let d: [u8; 32] = h("6c1b2630b03cae20e79352b28f533e6a314907d8c8457896a7e673619dead608")
            .try_into()
            .unwrap();
        let sid: Vec<u8> = (0x20..0x40).collect();
        let resp = build_server_hello(&S, &d, &sid, &[9; 32], &[0; 64]);
        assert_eq!(resp.len(), 202);
        assert_eq!(resp[..11].to_vec(), h("160303007a020000760303"));
        assert_eq!(
            resp[11..43].to_vec(),
            h("aef1b8fc6c4efdba1ad1c1ff3aa40ed57116dabf3bd296619cd1c0ba0ef5650e")
        );
        assert_eq!(resp[43], 0x20);
        assert_eq!(resp[44..76], sid[..]);
        assert_eq!(resp[127..133], CCS_RECORD);
        assert_eq!(resp[133..138], [0x17, 0x03, 0x03, 0x00, 0x40]);
        assert!(verify_server_hello(&S, &d, &resp));
        let mut bad = resp.clone();
        bad[150] ^= 1;
        assert!(!verify_server_hello(&S, &d, &bad));
        assert!(!verify_server_hello(&[2; 16], &d, &resp));
    }

    #[test]
    fn hello_shapes() {
        for _ in 0..8 {
            let small = client_hello_template(
                Some("example.com"),
                &["h2", "http/1.1"],
                HelloShape::Small517,
            );
            assert_eq!(small.len(), 517);
            assert_eq!(small[..5], [0x16, 0x03, 0x01, 0x02, 0x00]);
            assert_eq!(client_hello_session_id(&small).map(<[u8]>::len), Some(32));
            let large = client_hello_template(Some("example.com"), &["h2"], HelloShape::Large);
            assert!((1700..=1950).contains(&large.len()), "{}", large.len());
            let body_len = u16::from_be_bytes([large[3], large[4]]) as usize;
            assert_eq!(body_len + 5, large.len());
            let hs_len = u32::from_be_bytes([0, large[6], large[7], large[8]]) as usize;
            assert_eq!(hs_len + 9, large.len());
        }
        let mut rec = client_hello_template(None, &[], HelloShape::Large);
        let d = sign_client_hello(&S, &mut rec, 42);
        assert_eq!(rec[11..43], d);
        assert_eq!(check_client_hello(&S, &rec), Some(42));
    }
}
