#![no_main]
//! An arbitrary byte stream through `FrameReader`, checked against a reference splitter: the
//! stream cut at every 0x00; an empty piece is idle line (nothing), a piece longer than
//! `MAX_WIRE` is one `Resync`, anything else is one `Frame` with exactly those bytes. Bytes after
//! the last delimiter stay pending. Every frame yielded is then decoded: `Ok` or an error, never a
//! panic, and a decoded frame re-encodes to the very bytes received.

use eldergate_protocol::serial::{decode, encode, FrameReader, Push, MAX_WIRE};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, PartialEq)]
enum Event {
    Frame(Vec<u8>),
    Resync,
}

fn reference(data: &[u8]) -> Vec<Event> {
    let mut pieces: Vec<&[u8]> = data.split(|&b| b == 0).collect();
    pieces.pop(); // after the last delimiter (or the whole input when there is none): pending
    pieces
        .into_iter()
        .filter(|p| !p.is_empty())
        .map(|p| {
            if p.len() > MAX_WIRE {
                Event::Resync
            } else {
                Event::Frame(p.to_vec())
            }
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let mut reader = FrameReader::new();
    let mut got = Vec::new();
    for &b in data {
        match reader.push(b) {
            Push::Pending => {}
            Push::Resync => got.push(Event::Resync),
            Push::Frame(wire) => {
                assert_eq!(b, 0, "a frame ends only at a delimiter");
                assert!(!wire.is_empty() && wire.len() <= MAX_WIRE);
                assert!(!wire.contains(&0), "a frame never holds a delimiter");
                let copy = wire.to_vec();
                if let Ok(frame) = decode(wire) {
                    let mut out = [0u8; MAX_WIRE];
                    let n = encode(&frame, &mut out).expect("a decoded frame re-encodes");
                    assert_eq!(&out[..n - 1], &copy[..], "not canonical: {frame:?}");
                }
                got.push(Event::Frame(copy));
            }
        }
    }
    assert_eq!(got, reference(data));
});
