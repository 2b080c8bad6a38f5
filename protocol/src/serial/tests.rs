use super::*;
use proptest::prelude::*;

mod refusals;

pub(super) fn hex(s: &str) -> std::vec::Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn frame_of(
    v: &serde_json::Value,
) -> (
    std::string::String,
    u32,
    std::vec::Vec<u8>,
    std::vec::Vec<u8>,
) {
    (
        v["device"].as_str().unwrap().into(),
        v["seq"].as_u64().unwrap() as u32,
        hex(v["uid"].as_str().unwrap_or("")),
        hex(v["mac"].as_str().unwrap_or("")),
    )
}

fn body_of<'a>(v: &'a serde_json::Value, uid: &'a [u8], mac: &'a [u8]) -> Body<'a> {
    let n = |k: &str| v[k].as_i64().unwrap();
    match v["type"].as_str().unwrap() {
        "alarm" => Body::Alarm {
            action: n("action") as u8,
        },
        "heartbeat" => Body::Heartbeat {
            battery_mv: n("battery_mv") as u16,
            battery_pct: n("battery_pct") as u8,
        },
        "card_tap" => Body::CardTap {
            uid,
            mac,
            price: v["price"].as_i64().map(|p| p as i32),
        },
        "health" => Body::Health {
            reading: n("reading") as u8,
            value1: n("value1") as i32,
            value2: n("value2") as i32,
            context: v["context"].as_u64().map(|c| c as u8),
        },
        "reading_result" => Body::ReadingResult {
            result: n("result") as u8,
            name: v["name_utf8"].as_str().unwrap(),
        },
        "ack" => Body::Ack,
        "nak" => Body::Nak {
            reason: n("reason") as u8,
        },
        "display" => Body::Display {
            result: n("result") as u8,
            name: v["name_utf8"].as_str().unwrap(),
            price: n("price") as i32,
            subsidy: n("subsidy") as i32,
            payable: n("payable") as i32,
            balance: n("balance") as i32,
        },
        other => panic!("unknown vector type {other}"),
    }
}

#[test]
fn crc_parameters_match_the_spec_check_value() {
    assert_eq!(CRC.checksum(b"123456789"), 0x29B1);
}

#[test]
fn every_test_vector_encodes_and_decodes_exactly() {
    let text = include_str!("../../vectors/serial-v1.json");
    let doc: serde_json::Value = serde_json::from_str(text).unwrap();
    for v in doc["vectors"].as_array().unwrap() {
        let name = v["name"].as_str().unwrap();
        let (device, seq, uid, mac) = frame_of(v);
        let want = Frame {
            device: &device,
            seq,
            body: body_of(v, &uid, &mac),
        };
        let mut out = [0u8; MAX_WIRE];
        let n = encode(&want, &mut out).unwrap();
        let expected = hex(v["hex"].as_str().unwrap());
        assert_eq!(&out[..n], &expected[..], "encoding of {name}");
        let mut wire = expected.clone();
        let end = wire.len() - 1; // without the delimiter
        assert_eq!(
            decode(&mut wire[..end]).unwrap(),
            want,
            "decoding of {name}"
        );
    }
}

#[test]
fn a_flipped_bit_is_a_crc_error_not_a_message() {
    let f = Frame {
        device: "btn-1",
        seq: 9,
        body: Body::Alarm { action: 1 },
    };
    let mut out = [0u8; MAX_WIRE];
    let n = encode(&f, &mut out).unwrap();
    for i in 1..n - 1 {
        let mut w = out;
        w[i] ^= 0x04;
        let r = decode(&mut w[..n - 1]);
        assert!(r.is_err(), "bit flip at {i} accepted: {r:?}");
    }
}

#[test]
fn the_reader_resynchronizes_after_garbage_and_overlong_runs() {
    let f = Frame {
        device: "btn-1",
        seq: 3,
        body: Body::Alarm { action: 1 },
    };
    let mut one = [0u8; MAX_WIRE];
    let n = encode(&f, &mut one).unwrap();
    let mut stream = std::vec::Vec::new();
    stream.extend_from_slice(&[0x55; 300]); // noise longer than any frame, then a delimiter
    stream.push(0);
    stream.extend_from_slice(&one[..n]);
    stream.extend_from_slice(&[7, 7, 7]); // a truncated frame...
    stream.extend_from_slice(&one[..n]); // ...glued to a good one: the pair fails, as one frame
    stream.extend_from_slice(&one[..n]);
    let mut r = FrameReader::new();
    let (mut good, mut bad, mut resync) = (0, 0, 0);
    for b in stream {
        match r.push(b) {
            Push::Frame(w) => match decode(w) {
                Ok(got) => {
                    assert_eq!(got, f);
                    good += 1
                }
                Err(_) => bad += 1,
            },
            Push::Resync => resync += 1,
            Push::Pending => {}
        }
    }
    assert_eq!((good, bad, resync), (2, 1, 1));
}

fn arb_body() -> impl Strategy<
    Value = (
        u8,
        u16,
        u8,
        std::vec::Vec<u8>,
        std::vec::Vec<u8>,
        i32,
        i32,
        std::string::String,
    ),
> {
    (
        0u8..8,
        any::<u16>(),
        any::<u8>(),
        proptest::collection::vec(any::<u8>(), 4..=10),
        proptest::collection::vec(any::<u8>(), 0..=8),
        any::<i32>(),
        any::<i32>(),
        "[a-z张三*]{0,6}",
    )
}

proptest! {
    #[test]
    fn every_frame_round_trips(
        device in "[A-Za-z0-9_.-]{1,16}",
        seq in any::<u32>(),
        parts in arb_body(),
    ) {
        let (k, mv, pct, uid, mac, a, b, name) = parts;
        let body = match k {
            0 => Body::Alarm { action: 1 + pct % 3 },
            1 => Body::Heartbeat { battery_mv: mv, battery_pct: pct },
            2 => Body::CardTap { uid: &uid, mac: &mac, price: (a % 3 != 0).then_some(b) },
            3 => Body::Health { reading: 1 + pct % 6, value1: a, value2: b, context: (pct % 2 == 0).then_some(pct) },
            4 => Body::Ack,
            5 | 6 => Body::Nak { reason: pct },
            _ => Body::Display { result: pct, name: &name, price: a, subsidy: b, payable: a, balance: b },
        };
        // An anonymous NAK (SPEC.md §6.3) is the only frame with an empty id.
        let device = if k == 6 { "" } else { device.as_str() };
        let f = Frame { device, seq, body };
        let mut out = [0u8; MAX_WIRE];
        let n = encode(&f, &mut out).unwrap();
        prop_assert!(out[..n - 1].iter().all(|&x| x != 0), "no zero byte inside a frame");
        prop_assert_eq!(decode(&mut out[..n - 1]).unwrap(), f);
    }

    #[test]
    fn arbitrary_bytes_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode_header(&mut bytes.clone());
        let _ = check(&mut bytes.clone());
        let _ = decode(&mut bytes);
        let mut r = FrameReader::new();
        for b in bytes {
            if let Push::Frame(w) = r.push(b) {
                let _ = decode(w);
            }
        }
    }
}

/// Found by `cargo fuzz run decode_frame` (minimized): `cobs::decode_in_place` stops at the first
/// 0x00, so a frame followed by its delimiter and anything else decoded as that frame, silently
/// dropping the rest. A 0x00 only ends a frame (SPEC.md §2): `decode` rejects any inside.
#[test]
fn a_delimiter_inside_the_input_is_rejected_not_cut_at() {
    let text = include_str!("../../vectors/serial-v1.json");
    let doc: serde_json::Value = serde_json::from_str(text).unwrap();
    let with_delimiter = hex(doc["vectors"][6]["hex"].as_str().unwrap()); // blood pressure
    assert_eq!(
        with_delimiter,
        hex("0d0104086b696f736b2d303109010103018701010255010103298900")
    );
    let end = with_delimiter.len() - 1;
    assert!(decode(&mut with_delimiter.clone()[..end]).is_ok());
    for tail in [&[][..], &[0][..], &[0x42, 0x99][..], &with_delimiter[..]] {
        let mut wire = with_delimiter.clone();
        wire.extend_from_slice(tail);
        assert_eq!(decode(&mut wire), Err(DecodeError::Cobs), "tail {tail:?}");
    }
}
