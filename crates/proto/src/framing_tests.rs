//! Unit tests and proptests for `framing` (docs/PROTOCOL.md §3.6 self-checks).

use super::*;
use proptest::prelude::*;

fn enc(f: Framing, payload: &[u8], q: bool, pad: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(f, payload, q, pad, &mut out).expect("encodable");
    out
}

fn hdr(f: Framing, len: usize, q: bool, pad: usize) -> Vec<u8> {
    encode_header(f, len, q, pad)
        .expect("encodable")
        .as_slice()
        .to_vec()
}

#[test]
fn self_checks_3_6() {
    let p8 = [0xaa; 8];
    assert_eq!(enc(Framing::Abridged, &p8, false, &[])[..1], [0x02]);
    assert_eq!(enc(Framing::Abridged, &p8, true, &[])[..1], [0x82]);
    assert_eq!(
        hdr(Framing::Abridged, 508, false, 0),
        [0x7f, 0x7f, 0x00, 0x00]
    );
    assert_eq!(
        hdr(Framing::Intermediate, 8, true, 0),
        [0x08, 0x00, 0x00, 0x80]
    );
    let secure = enc(Framing::Padded, &p8, false, &[1, 2, 3]);
    assert_eq!(secure[..4], [0x0b, 0, 0, 0]);
    assert_eq!(secure.len(), 4 + 8 + 3);
    assert_eq!(
        quick_ack_answer(Framing::Abridged, 0x8102_0304),
        [0x81, 0x02, 0x03, 0x04]
    );
    assert_eq!(
        quick_ack_answer(Framing::Intermediate, 0x8102_0304),
        [0x04, 0x03, 0x02, 0x81]
    );
    assert_eq!(
        quick_ack_answer(Framing::Padded, 0x8102_0304),
        [0x04, 0x03, 0x02, 0x81]
    );
}

#[test]
fn decode_errors_are_precise() {
    let mut d = FrameDecoder::new(Framing::Abridged, StreamSide::FromClient);
    assert_eq!(
        d.decode(&[0x7f, 0x10, 0, 0]),
        Err(FrameError::AbridgedLongFormTooShort(0x10))
    );
    assert!(matches!(
        d.decode(&[0x7f, 0xff, 0xff, 0xff]),
        Err(FrameError::TooLarge { .. })
    ));
    let mut d = FrameDecoder::new(Framing::Intermediate, StreamSide::FromClient);
    assert_eq!(d.decode(&[3, 0, 0, 0]), Err(FrameError::TooShort(3)));
    assert_eq!(d.decode(&[6, 0, 0, 0]), Err(FrameError::Unaligned(6)));
    assert!(matches!(
        d.decode(&[0, 0, 0, 0x40]),
        Err(FrameError::TooLarge { .. })
    ));
    let mut d = FrameDecoder::new(Framing::Padded, StreamSide::FromClient).with_max_payload(64);
    assert_eq!(
        d.decode(&[65, 0, 0, 0]),
        Err(FrameError::TooLarge { len: 65, max: 64 })
    );
    assert_eq!(d.decode(&[2, 0, 0, 0]), Err(FrameError::TooShort(2)));
    assert_eq!(
        encode_header(Framing::Abridged, 6, false, 0),
        Err(FrameError::Unaligned(6))
    );
    assert_eq!(
        encode_header(Framing::Abridged, 8, false, 1),
        Err(FrameError::PaddingNotAllowed)
    );
    assert_eq!(
        encode_header(Framing::Intermediate, 8, false, 1),
        Err(FrameError::PaddingNotAllowed)
    );
}

#[test]
fn needs_more_then_frame() {
    let wire = enc(Framing::Padded, &[7; 12], true, &[9; 3]);
    let mut d = FrameDecoder::new(Framing::Padded, StreamSide::FromClient);
    for cut in 0..wire.len() {
        assert_eq!(d.decode(&wire[..cut]), Ok(None), "cut {cut}");
    }
    let got = d.decode(&wire).expect("valid");
    assert_eq!(
        got,
        Some(Decoded::Frame(Frame {
            payload: 4..16,
            quick_ack: true,
            consumed: 19
        }))
    );
}

#[test]
fn empty_frames_are_bounded() {
    let mut d =
        FrameDecoder::new(Framing::Intermediate, StreamSide::FromClient).with_max_empty_run(2);
    assert!(matches!(d.decode(&[0; 4]), Ok(Some(Decoded::Frame(_)))));
    assert!(matches!(d.decode(&[0; 4]), Ok(Some(Decoded::Frame(_)))));
    assert_eq!(d.decode(&[0; 4]), Err(FrameError::TooManyEmptyFrames(3)));
    let mut d = FrameDecoder::new(Framing::Abridged, StreamSide::FromClient).with_max_empty_run(1);
    assert!(d.decode(&[0]).is_ok());
    assert!(d.decode(&[1, 0, 0, 0, 0]).is_ok());
    assert!(d.decode(&[0]).is_ok(), "a non-empty frame resets the run");
}

#[test]
fn server_side_quick_ack_answers() {
    let mut d = FrameDecoder::new(Framing::Abridged, StreamSide::FromServer);
    let ans = quick_ack_answer(Framing::Abridged, 0x8102_0304);
    assert_eq!(
        d.decode(&ans),
        Ok(Some(Decoded::QuickAck {
            token: 0x8102_0304,
            consumed: 4
        }))
    );
    let mut d = FrameDecoder::new(Framing::Padded, StreamSide::FromServer);
    let ans = quick_ack_answer(Framing::Padded, 0x8102_0304);
    assert_eq!(
        d.decode(&ans),
        Ok(Some(Decoded::QuickAck {
            token: 0x8102_0304,
            consumed: 4
        }))
    );
    assert_eq!(d.decode(&ans[..3]), Ok(None));
}

fn framing_strategy() -> impl Strategy<Value = Framing> {
    prop_oneof![
        Just(Framing::Abridged),
        Just(Framing::Intermediate),
        Just(Framing::Padded)
    ]
}

proptest! {
    #[test]
    fn round_trip(f in framing_strategy(), words in 0usize..300, q in any::<bool>(), pad in 0usize..16, seed in any::<u8>()) {
        let payload: Vec<u8> = (0..words * 4).map(|i| (i as u8) ^ seed).collect();
        let pad = if f == Framing::Padded { pad } else { 0 };
        let padding = vec![0x5au8; pad];
        let mut wire = enc(f, &payload, q, &padding);
        wire.extend_from_slice(&[1, 2, 3]); // trailing bytes of the next frame
        let mut d = FrameDecoder::new(f, StreamSide::FromClient);
        match d.decode(&wire) {
            Ok(Some(Decoded::Frame(fr))) => {
                prop_assert_eq!(fr.consumed, wire.len() - 3);
                // Padded receivers keep len - len % 4: up to 12 padding bytes survive.
                let kept = &wire[fr.payload.clone()];
                prop_assert_eq!(&kept[..payload.len()], &payload[..]);
                prop_assert!(kept.len() - payload.len() < 13);
                prop_assert_eq!(fr.quick_ack, q);
            }
            Err(FrameError::TooShort(n)) => prop_assert!(f == Framing::Padded && words == 0 && n == pad),
            other => prop_assert!(false, "unexpected {:?}", other),
        }
    }

    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64), f in framing_strategy(), server in any::<bool>()) {
        let side = if server { StreamSide::FromServer } else { StreamSide::FromClient };
        let mut d = FrameDecoder::new(f, side).with_max_payload(1024);
        let mut rest = &bytes[..];
        while let Ok(Some(x)) = d.decode(rest) {
            let n = match x { Decoded::Frame(fr) => fr.consumed, Decoded::QuickAck { consumed, .. } => consumed };
            prop_assert!(n > 0 && n <= rest.len());
            rest = &rest[n..];
        }
    }
}
