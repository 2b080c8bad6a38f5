#![no_main]
//! Arbitrary bytes given to `decode` as one received frame (what `FrameReader` hands over, minus
//! its guarantees: zeros and overlong inputs too). It must never panic, and anything that decodes
//! must be canonical: `encode(decode(x))` is exactly `x` plus the 0x00 delimiter, so one frame has
//! one wire form (no second encoding slips past a dedupe on raw bytes). The gateway's reading
//! (`check`: SPEC.md §6.2 without a registry) agrees with `decode` on every frame a device may
//! send, and every refusal's NAK encodes.

use eldergate_protocol::serial::{check, decode, encode, Rejected, MAX_WIRE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut copy = data.to_vec();
    let decoded = decode(&mut copy);
    let mut copy = data.to_vec();
    match check(&mut copy) {
        Ok(f) => assert_eq!(decoded, Ok(f), "check accepted what decode does not"),
        Err(Rejected::Noise(e)) => assert_eq!(decoded, Err(e)),
        Err(Rejected::Refused(r)) => {
            let mut out = [0u8; MAX_WIRE];
            encode(&r.nak(), &mut out).expect("a NAK always encodes");
            if let Ok(f) = decoded {
                assert!(
                    !f.body.message_type().from_device(),
                    "check refused {f:?}: {r:?}"
                );
            }
        }
    }
    let mut wire = data.to_vec();
    if let Ok(frame) = decode(&mut wire) {
        let mut out = [0u8; MAX_WIRE];
        let n = encode(&frame, &mut out).expect("a decoded frame re-encodes");
        assert_eq!(out[n - 1], 0, "encode ends with the delimiter");
        assert_eq!(
            &out[..n - 1],
            data,
            "decoded frame re-encodes to other bytes: {frame:?}"
        );
        let mut again = out;
        assert_eq!(decode(&mut again[..n - 1]), Ok(frame));
    }
});
