#![no_main]
//! Arbitrary bytes given to `decode` as one received frame (what `FrameReader` hands over, minus
//! its guarantees: zeros and overlong inputs too). It must never panic, and anything that decodes
//! must be canonical: `encode(decode(x))` is exactly `x` plus the 0x00 delimiter, so one frame has
//! one wire form (no second encoding slips past a dedupe on raw bytes).

use eldergate_protocol::serial::{decode, encode, MAX_WIRE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
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
