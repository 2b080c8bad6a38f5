#![no_main]
//! Arbitrary strings through `topic::parse_up`, the gateway's parser of every topic a device or
//! staff client publishes to. It must never panic; every id it returns must be a valid id; and an
//! accepted topic must be exactly what the topic builders make from its parts (round trip).

use eldergate_protocol::topic::{self, is_valid_id, parse_up, UpTopic};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    let Ok(t) = parse_up(s) else { return };
    let (ids, rebuilt): (&[&str], String) = match t {
        UpTopic::Alarm { site, device } => (&[site, device], topic::alarm(site, device)),
        UpTopic::Telemetry { site, device, kind } => {
            (&[site, device, kind], topic::telemetry(site, device, kind))
        }
        UpTopic::Tap { site, reader } => (&[site, reader], topic::tap(site, reader)),
        UpTopic::StaffCommand { site, staff } => (&[site, staff], topic::staff_cmd(site, staff)),
    };
    for id in ids {
        assert!(is_valid_id(id), "{id:?} accepted in {s:?}");
    }
    assert_eq!(rebuilt, s);
    assert_eq!(parse_up(&rebuilt), Ok(t));
});
