//! SPEC.md §6: which NAK a frame with a good CRC gets, to whom, and the value rules of a DISPLAY.
//! The vectors come from `vectors/gen.py`, written from the SPEC text alone.

use super::super::*;
use super::hex;
use proptest::prelude::*;

fn vectors() -> serde_json::Value {
    serde_json::from_str(include_str!("../../../vectors/serial-v1.json")).unwrap()
}

fn without_delimiter(hex_text: &str) -> std::vec::Vec<u8> {
    let mut wire = hex(hex_text);
    assert_eq!(wire.pop(), Some(0), "a vector ends with its delimiter");
    wire
}

fn encoded(f: &Frame<'_>) -> std::vec::Vec<u8> {
    let mut out = [0u8; MAX_WIRE];
    let n = encode(f, &mut out).unwrap();
    out[..n].to_vec()
}

#[test]
fn every_refused_vector_gets_its_nak_from_the_frame_alone() {
    let doc = vectors();
    let refused = doc["refused"].as_array().unwrap();
    assert!(refused.len() >= 20);
    for v in refused {
        let name = v["name"].as_str().unwrap();
        let mut wire = without_delimiter(v["hex"].as_str().unwrap());
        let r = match check(&mut wire) {
            Err(Rejected::Refused(r)) => r,
            other => panic!("{name}: expected a refusal, got {other:?}"),
        };
        let device = v["device"].as_str().unwrap();
        assert_eq!(
            u64::from(r.reason.code()),
            v["reason"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(r.device.unwrap_or(""), device, "{name}: addressee");
        assert_eq!(r.device.is_none(), device.is_empty(), "{name}: anonymous");
        assert_eq!(u64::from(r.seq), v["seq"].as_u64().unwrap(), "{name}: seq");
        assert!(!r.detail.is_empty());
        assert_eq!(
            encoded(&r.nak()),
            hex(v["nak_hex"].as_str().unwrap()),
            "{name}: the NAK on the wire"
        );
    }
}

#[test]
fn every_nak_reason_and_display_result_has_a_vector() {
    let doc = vectors();
    let all = doc["vectors"].as_array().unwrap();
    let codes = |ty: &str, field: &str| -> std::collections::BTreeSet<u64> {
        all.iter()
            .filter(|v| v["type"] == ty)
            .map(|v| v[field].as_u64().unwrap())
            .collect()
    };
    assert_eq!(codes("nak", "reason"), (1..=7).collect());
    assert_eq!(codes("display", "result"), (0..=6).collect());
    assert_eq!(codes("reading_result", "result"), (0..=4).collect());
    assert!(all.iter().any(|v| v["type"] == "nak" && v["device"] == ""));
    assert!(all
        .iter()
        .any(|v| v["seq"] == 0xFFFF_FFFFu64 && v["device"].as_str().unwrap().len() == MAX_ID));
    for code in 0..=u8::MAX {
        if let Some(r) = NakReason::from_code(code) {
            assert_eq!(r.code(), code);
        }
        if let Some(r) = DisplayResult::from_code(code) {
            assert_eq!(r.code(), code);
        }
        if let Some(t) = MessageType::from_code(code) {
            assert_eq!(t.code(), code);
        }
        match crate::serial::ReadingResultCode::from_code(code) {
            Some(r) => assert_eq!(r.code(), code),
            None => assert!(code > 4, "READING_RESULT {code}"),
        }
    }
    assert_eq!(NakReason::from_code(8), None);
    assert_eq!(DisplayResult::from_code(7), None);
}

/// The gateway-level vectors need a registry and a journal (the e2e tests run them); here: their
/// frames pass the codec's part (header readable, version 1) and their replies are well formed.
#[test]
fn gateway_vectors_are_well_formed_frames_with_well_formed_replies() {
    let doc = vectors();
    let gateway = doc["gateway"]["vectors"].as_array().unwrap();
    for v in gateway {
        let name = v["name"].as_str().unwrap();
        for h in v["before"].as_array().into_iter().flatten() {
            check(&mut without_delimiter(h.as_str().unwrap())).unwrap();
        }
        let mut wire = without_delimiter(v["frame"].as_str().unwrap());
        let header = decode_header(&mut wire).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let reply = &v["reply"];
        if reply.is_null() {
            continue;
        }
        assert_eq!(reply["device"], header.device, "{name}");
        assert_eq!(reply["seq"].as_u64(), Some(u64::from(header.seq)), "{name}");
        let want = match reply["type"].as_str().unwrap() {
            "ack" => Frame {
                device: header.device,
                seq: header.seq,
                body: Body::Ack,
            },
            _ => Frame::nak(
                header.device,
                header.seq,
                NakReason::from_code(u8::try_from(reply["reason"].as_u64().unwrap()).unwrap())
                    .unwrap(),
            ),
        };
        assert_eq!(
            encoded(&want),
            hex(reply["hex"].as_str().unwrap()),
            "{name}"
        );
    }
}

#[test]
fn the_header_of_a_frame_with_a_bad_body_is_still_read() {
    let f = Frame {
        device: "nobody",
        seq: 8,
        body: Body::Alarm { action: 9 }, // encode checks layout, not values
    };
    let mut wire = encoded(&f);
    wire.pop();
    let mut copy = wire.clone();
    let h = decode_header(&mut copy).unwrap();
    assert_eq!((h.device, h.seq, h.kind), ("nobody", 8, kind::ALARM));
    assert_eq!(h.message_type(), Some(MessageType::Alarm));
    let r = h.body().unwrap_err();
    assert_eq!(r.reason, NakReason::Unparseable);
    assert_eq!((r.device, r.seq), (Some("nobody"), 8));
    assert_eq!(decode(&mut wire), Err(DecodeError::Malformed));
}

#[test]
fn noise_gets_no_nak() {
    let f = Frame {
        device: "btn-1",
        seq: 1,
        body: Body::Alarm { action: 1 },
    };
    let mut wire = encoded(&f);
    wire.pop();
    let mut bad_crc = wire.clone();
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 0x01;
    assert_eq!(check(&mut bad_crc), Err(Rejected::Noise(DecodeError::Crc)));
    assert_eq!(
        decode_header(&mut [0x55; 120]),
        Err(Rejected::Noise(DecodeError::TooLong))
    );
    assert!(matches!(
        check(&mut [0x02, 0x01]),
        Err(Rejected::Noise(DecodeError::TooShort | DecodeError::Cobs))
    ));
}

#[test]
fn only_a_nak_may_be_anonymous() {
    let mut out = [0u8; MAX_WIRE];
    let anonymous_ack = Frame {
        device: "",
        seq: 0,
        body: Body::Ack,
    };
    assert_eq!(encode(&anonymous_ack, &mut out), Err(EncodeError::BadId));
    let nak = Frame::nak("", 0, NakReason::Unparseable);
    let n = encode(&nak, &mut out).unwrap();
    assert_eq!(decode(&mut out[..n - 1]), Ok(nak));
    // From a device, the same bytes are unparseable (a device frame needs an id).
    let n = encode(&nak, &mut out).unwrap();
    let r = match check(&mut out[..n - 1]) {
        Err(Rejected::Refused(r)) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        (r.reason, r.device, r.seq),
        (NakReason::Unparseable, None, 0)
    );
}

#[test]
fn names_are_cut_at_a_character_boundary() {
    assert_eq!(fit_name("张*华"), "张*华");
    let long = std::format!("阿{}提", "*".repeat(19)); // 25 bytes
    assert_eq!(fit_name(&long), std::format!("阿{}", "*".repeat(19)));
    let longer = std::format!("阿{}提", "*".repeat(23)); // 29 bytes
    assert_eq!(fit_name(&longer).len(), MAX_NAME);
    assert_eq!(fit_name("欧阳小明欧阳小明欧阳小明").len(), 24);
    assert_eq!(fit_name(""), "");
}

#[test]
fn amounts_outside_i32_are_clamped() {
    assert_eq!(clamp_fen(1350), 1350);
    assert_eq!(clamp_fen(-5), -5);
    assert_eq!(clamp_fen(i64::MAX), i32::MAX);
    assert_eq!(clamp_fen(i64::from(i32::MAX) + 1), i32::MAX);
    assert_eq!(clamp_fen(i64::MIN), i32::MIN);
}

#[test]
fn a_uid_maps_to_upper_case_hex_without_separators() {
    assert_eq!(
        CardId::from_uid(&[0x04, 0xA1, 0xB2, 0xC3])
            .unwrap()
            .as_str(),
        "04A1B2C3"
    );
    assert_eq!(
        CardId::from_uid(&[0x1d, 0xdc, 0xcf, 0x2d])
            .unwrap()
            .as_str(),
        "1DDCCF2D"
    );
    assert_eq!(CardId::from_uid(&[0xFF; 10]).unwrap().as_str().len(), 20);
    assert_eq!(CardId::from_uid(&[0; 11]), None);
}

#[test]
fn tap_results_map_to_display_results() {
    use crate::payload::TapResult;
    assert_eq!(TapResult::Paid.code(), 0);
    assert_eq!(TapResult::NoPrice.code(), 5);
    assert_eq!(TapResult::Refused.code(), DisplayResult::Refused.code());
    assert_eq!(
        serde_json::to_string(&TapResult::Refused).unwrap(),
        "\"refused\""
    );
}

proptest! {
    /// `check` is `decode` restricted to what a device may send: they agree on every input.
    #[test]
    fn check_agrees_with_decode(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
        let (mut a, mut b) = (bytes.clone(), bytes);
        let decoded = decode(&mut a);
        match check(&mut b) {
            Ok(f) => prop_assert_eq!(decoded, Ok(f)),
            Err(Rejected::Noise(e)) => prop_assert_eq!(decoded, Err(e)),
            Err(Rejected::Refused(r)) => {
                let from_device = decoded
                    .as_ref()
                    .is_ok_and(|f| f.body.message_type().from_device());
                prop_assert!(!from_device, "check refused {:?} ({}) that decodes", decoded, r.detail);
            }
        }
    }

    /// A frame a device may send, with its body corrupted after the header, keeps its NAK
    /// addressed: the id and seq are read whatever follows them.
    #[test]
    fn a_refused_body_is_naked_to_its_sender(
        device in "[A-Za-z0-9_.-]{1,16}",
        seq in any::<u32>(),
        junk in proptest::collection::vec(any::<u8>(), 0..20),
    ) {
        let mut raw = std::vec![1u8, kind::ALARM, u8::try_from(device.len()).unwrap()];
        raw.extend_from_slice(device.as_bytes());
        raw.extend_from_slice(&seq.to_le_bytes());
        raw.extend_from_slice(&junk);
        raw.extend_from_slice(&CRC.checksum(&raw).to_le_bytes());
        let mut wire = std::vec![0u8; MAX_WIRE];
        let n = cobs::encode(&raw, &mut wire);
        match check(&mut wire[..n]) {
            Ok(f) => {
                let valid_press = matches!(f.body, Body::Alarm { action: 1..=3 });
                prop_assert!(valid_press && junk.len() == 1, "accepted {:?}", f);
            }
            Err(Rejected::Refused(r)) => {
                prop_assert_eq!(r.reason, NakReason::Unparseable);
                prop_assert_eq!((r.device, r.seq), (Some(device.as_str()), seq));
            }
            Err(Rejected::Noise(e)) => prop_assert!(false, "noise {:?}", e),
        }
    }
}
