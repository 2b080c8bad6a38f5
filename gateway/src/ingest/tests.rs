use super::*;
use crate::config::{DeviceConfig, Link};
use std::collections::BTreeMap;

fn registry() -> Registry {
    let mut devices = BTreeMap::new();
    for (id, kind) in [
        ("btn-1", DeviceKind::AlarmButton),
        ("rdr-1", DeviceKind::CardReader),
    ] {
        devices.insert(
            id.to_string(),
            DeviceConfig {
                id: id.into(),
                kind,
                link: Link::Mqtt,
                resident_id: None,
                location: None,
                heartbeat_s: 300,
            },
        );
    }
    let mut r = Registry::empty("s");
    r.devices = devices;
    r
}

fn reason(topic: &str, payload: &[u8]) -> &'static str {
    classify_alarm(&registry(), topic, payload)
        .unwrap_err()
        .reason
}

#[test]
fn a_registered_button_press_is_accepted() {
    let r = classify_alarm(
        &registry(),
        "eldergate/v1/s/alarm/btn-1",
        br#"{"v":1,"seq":3,"action":"press"}"#,
    );
    assert!(matches!(r, Ok(AlarmInput::Device(d, m)) if d == "btn-1" && m.seq == 3));
}

#[test]
fn each_kind_of_bad_input_has_its_own_reason() {
    let ok = br#"{"v":1,"seq":3,"action":"press"}"#;
    assert_eq!(
        reason("eldergate/v1/s/alarm/btn-1", b"{not json"),
        "malformed_json"
    );
    assert_eq!(reason("eldergate/v1/s/alarm/btn-9", ok), "unknown_device");
    assert_eq!(
        reason("eldergate/v1/s/alarm/rdr-1", ok),
        "wrong_device_kind"
    );
    assert_eq!(reason("eldergate/v1/other/alarm/btn-1", ok), "bad_topic");
    assert_eq!(reason("eldergate/v1/s/alarm/btn-1/x", ok), "bad_topic");
    assert_eq!(reason("eldergate/v2/s/alarm/btn-1", ok), "unknown_version");
    assert_eq!(
        reason(
            "eldergate/v1/s/alarm/btn-1",
            br#"{"v":2,"seq":3,"action":"press"}"#
        ),
        "unknown_version"
    );
    assert_eq!(
        reason(
            "eldergate/v1/s/alarm/btn-1",
            br#"{"v":1,"seq":-1,"action":"press"}"#
        ),
        "malformed_json"
    );
    assert_eq!(
        reason(
            "eldergate/v1/s/alarm/btn-1",
            &vec![b' '; MAX_DEVICE_PAYLOAD + 1]
        ),
        "oversize"
    );
}

proptest::proptest! {
    #[test]
    fn arbitrary_payloads_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
        let _ = classify_alarm(&registry(), "eldergate/v1/s/alarm/btn-1", &bytes);
        let _ = classify_alarm(&registry(), "eldergate/v1/s/staff/cmd", &bytes);
    }
}
