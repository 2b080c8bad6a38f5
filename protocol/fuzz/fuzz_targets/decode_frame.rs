#![no_main]
//! Arbitrary bytes through the stream reader and the decoder: must never panic, and anything
//! that decodes must encode back to the same frame.

use eldergate_protocol::serial::{decode, encode, FrameReader, Push, MAX_WIRE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut reader = FrameReader::new();
    for &b in data {
        if let Push::Frame(wire) = reader.push(b) {
            if let Ok(frame) = decode(wire) {
                let mut out = [0u8; MAX_WIRE];
                let n = encode(&frame, &mut out).expect("a decoded frame re-encodes");
                let mut again = out;
                assert_eq!(decode(&mut again[..n - 1]).ok(), Some(frame));
            }
        }
    }
});
