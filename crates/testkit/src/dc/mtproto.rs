//! Just enough unencrypted MTProto for a test DC: recognise `req_pq_multi` (and the older
//! `req_pq`) and build a well-formed `resPQ` that real client libraries decode.

/// `req_pq_multi#be7e8ef1 nonce:int128`.
pub const REQ_PQ_MULTI: u32 = 0xbe7e_8ef1;
/// `req_pq#60469778 nonce:int128` (legacy).
pub const REQ_PQ: u32 = 0x6046_9778;
/// `resPQ#05162463`.
pub const RES_PQ: u32 = 0x0516_2463;
/// `vector#1cb5c415`.
pub const VECTOR: u32 = 0x1cb5_c415;
/// The `pq` the test DC hands out: 1229739323 × 1402015859 (the example of the MTProto docs),
/// so clients that go on to factorise it finish quickly.
pub const PQ: u64 = 0x17ED_4894_1A08_F981;
/// The key fingerprint advertised (arbitrary; clients will not find a matching RSA key).
pub const FINGERPRINT: u64 = 0xc3b4_2b02_6ce8_6b21;

/// One unencrypted message as parsed from a transport packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlainMessage {
    /// `auth_key_id` (0 for unencrypted messages).
    pub auth_key_id: u64,
    /// Client message id.
    pub msg_id: i64,
    /// TL constructor of the body (first 4 bytes, LE), if present.
    pub constructor: Option<u32>,
    /// Body bytes (`message_data_length` of them).
    pub body: Vec<u8>,
}

/// Parses `auth_key_id(8) msg_id(8) len(4) body`; trailing bytes beyond `len` are tolerated.
pub fn parse_plain(packet: &[u8]) -> Result<PlainMessage, String> {
    if packet.len() < 8 {
        return Err(format!("packet of {} bytes", packet.len()));
    }
    let auth_key_id = u64::from_le_bytes(packet[..8].try_into().map_err(|_| "short")?);
    if auth_key_id != 0 {
        return Ok(PlainMessage {
            auth_key_id,
            msg_id: 0,
            constructor: None,
            body: Vec::new(),
        });
    }
    if packet.len() < 20 {
        return Err(format!("unencrypted message of {} bytes", packet.len()));
    }
    let msg_id = i64::from_le_bytes(packet[8..16].try_into().map_err(|_| "short")?);
    let len = u32::from_le_bytes(packet[16..20].try_into().map_err(|_| "short")?) as usize;
    let body = packet
        .get(20..20 + len)
        .ok_or_else(|| format!("declared length {len}, have {}", packet.len() - 20))?
        .to_vec();
    let constructor = body
        .get(..4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
    Ok(PlainMessage {
        auth_key_id,
        msg_id,
        constructor,
        body,
    })
}

/// The nonce of a `req_pq_multi` / `req_pq` body.
pub fn req_pq_nonce(msg: &PlainMessage) -> Option<[u8; 16]> {
    match msg.constructor {
        Some(REQ_PQ_MULTI | REQ_PQ) => msg.body.get(4..20)?.try_into().ok(),
        _ => None,
    }
}

fn tl_bytes(out: &mut Vec<u8>, data: &[u8]) {
    // Short form only (len < 254) — all this DC ever sends.
    out.push(data.len() as u8);
    out.extend_from_slice(data);
    while out.len() % 4 != 0 {
        out.push(0);
    }
}

/// `resPQ nonce server_nonce pq:bytes server_public_key_fingerprints:Vector<long>`.
pub fn res_pq_body(nonce: &[u8; 16], server_nonce: &[u8; 16]) -> Vec<u8> {
    let mut b = Vec::with_capacity(64);
    b.extend_from_slice(&RES_PQ.to_le_bytes());
    b.extend_from_slice(nonce);
    b.extend_from_slice(server_nonce);
    tl_bytes(&mut b, &PQ.to_be_bytes());
    b.extend_from_slice(&VECTOR.to_le_bytes());
    b.extend_from_slice(&1u32.to_le_bytes());
    b.extend_from_slice(&FINGERPRINT.to_le_bytes());
    b
}

/// Wraps a body as an unencrypted server message; server message ids are ≡ 1 (mod 4).
pub fn plain_message(body: &[u8]) -> Vec<u8> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let msg_id = ((now.as_secs() << 32) | (u64::from(now.subsec_nanos()) & !3)) | 1;
    let mut m = Vec::with_capacity(20 + body.len());
    m.extend_from_slice(&0u64.to_le_bytes());
    m.extend_from_slice(&msg_id.to_le_bytes());
    m.extend_from_slice(&(body.len() as u32).to_le_bytes());
    m.extend_from_slice(body);
    m
}

/// Builds the client's `req_pq_multi` message (used by the Rust test client and tests).
pub fn req_pq_multi_message(nonce: &[u8; 16]) -> Vec<u8> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let msg_id = (now.as_secs() << 32) | (u64::from(now.subsec_nanos()) & !3);
    let mut body = REQ_PQ_MULTI.to_le_bytes().to_vec();
    body.extend_from_slice(nonce);
    let mut m = Vec::new();
    m.extend_from_slice(&0u64.to_le_bytes());
    m.extend_from_slice(&msg_id.to_le_bytes());
    m.extend_from_slice(&(body.len() as u32).to_le_bytes());
    m.extend_from_slice(&body);
    m
}

/// A decoded `resPQ` (client side, for tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResPq {
    /// Echoed client nonce.
    pub nonce: [u8; 16],
    /// Server nonce.
    pub server_nonce: [u8; 16],
    /// `pq` bytes.
    pub pq: Vec<u8>,
    /// Fingerprints.
    pub fingerprints: Vec<u64>,
}

/// Decodes a `resPQ` body.
pub fn parse_res_pq(body: &[u8]) -> Result<ResPq, String> {
    let get = |r: std::ops::Range<usize>| body.get(r).ok_or("truncated resPQ");
    if u32::from_le_bytes(get(0..4)?.try_into().map_err(|_| "x")?) != RES_PQ {
        return Err("not a resPQ".into());
    }
    let nonce: [u8; 16] = get(4..20)?.try_into().map_err(|_| "x")?;
    let server_nonce: [u8; 16] = get(20..36)?.try_into().map_err(|_| "x")?;
    let pq_len = usize::from(get(36..37)?[0]);
    let pq = get(37..37 + pq_len)?.to_vec();
    let mut off = (37 + pq_len).div_ceil(4) * 4;
    if u32::from_le_bytes(get(off..off + 4)?.try_into().map_err(|_| "x")?) != VECTOR {
        return Err("fingerprints are not a vector".into());
    }
    let n = u32::from_le_bytes(get(off + 4..off + 8)?.try_into().map_err(|_| "x")?) as usize;
    off += 8;
    let mut fingerprints = Vec::with_capacity(n.min(16));
    for i in 0..n {
        let f = get(off + 8 * i..off + 8 * i + 8)?;
        fingerprints.push(u64::from_le_bytes(f.try_into().map_err(|_| "x")?));
    }
    Ok(ResPq {
        nonce,
        server_nonce,
        pq,
        fingerprints,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn req_and_res_round_trip() {
        let nonce = [7u8; 16];
        let req = req_pq_multi_message(&nonce);
        assert_eq!(req.len(), 40);
        let m = parse_plain(&req).unwrap();
        assert_eq!(m.constructor, Some(REQ_PQ_MULTI));
        assert_eq!(req_pq_nonce(&m), Some(nonce));
        // Known wire bytes of the constructor.
        assert_eq!(req[20..24], [0xf1, 0x8e, 0x7e, 0xbe]);

        let body = res_pq_body(&nonce, &[9; 16]);
        assert_eq!(body.len(), 4 + 16 + 16 + 12 + 8 + 8);
        assert_eq!(body[..4], [0x63, 0x24, 0x16, 0x05]);
        let msg = plain_message(&body);
        let parsed = parse_plain(&msg).unwrap();
        assert_eq!(parsed.msg_id % 4, 1);
        let r = parse_res_pq(&parsed.body).unwrap();
        assert_eq!(r.nonce, nonce);
        assert_eq!(r.server_nonce, [9; 16]);
        assert_eq!(r.pq, PQ.to_be_bytes().to_vec());
        assert_eq!(r.fingerprints, vec![FINGERPRINT]);
        assert_eq!(1_229_739_323u64 * 1_402_015_859, PQ);
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        assert!(parse_plain(&[0; 4]).is_err());
        let mut m = req_pq_multi_message(&[1; 16]);
        m[16] = 200;
        assert!(parse_plain(&m).is_err());
        assert!(parse_res_pq(&[0x63, 0x24, 0x16, 0x05, 1]).is_err());
    }
}
