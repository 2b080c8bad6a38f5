use super::*;
use crate::config::{DeviceConfig, DeviceKind};
use crate::intake::check;
use crate::registry::Registry;
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

/// What the MQTT transport and the intake together say of an alarm-connection publish.
fn classify(topic: &str, payload: &[u8]) -> Result<Inbound, Rejection> {
    let reg = registry();
    let inbound = decode_publish("s", topic, payload, true).map_err(|u| u.rejection)?;
    if let Inbound::Device(up) = &inbound {
        check(&reg, up)?;
    }
    Ok(inbound)
}

fn reason(topic: &str, payload: &[u8]) -> &'static str {
    classify(topic, payload).unwrap_err().reason
}

#[test]
fn a_registered_button_press_is_accepted() {
    let r = classify(
        "eldergate/v1/s/alarm/btn-1",
        br#"{"v":1,"seq":3,"action":"press"}"#,
    );
    assert!(matches!(r, Ok(Inbound::Device(u)) if u.device == "btn-1" && u.seq == Some(3)));
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

#[test]
fn an_alarm_with_a_wrong_clock_is_acted_on_and_the_fault_recorded() {
    for payload in [
        br#"{"v":1,"seq":3,"action":"press","ts":18446744073709551615}"#.as_slice(),
        br#"{"v":1,"seq":3,"action":"press","ts":"yesterday"}"#,
        br#"{"v":1,"seq":3,"action":"press","ts":-9223372036854775808}"#,
        br#"{"v":1,"seq":3,"action":"press","colour":"red"}"#,
    ] {
        match classify("eldergate/v1/s/alarm/btn-1", payload) {
            Ok(Inbound::Device(Uplink {
                body:
                    UplinkBody::Alarm {
                        action: AlarmAction::Press,
                        device_time: None,
                        anomaly: Some(_),
                    },
                ..
            })) => {}
            other => panic!("{} gave {other:?}", String::from_utf8_lossy(payload)),
        }
    }
}

#[test]
fn a_staff_command_that_cannot_be_read_is_answered_when_it_names_a_request() {
    let u = decode_publish(
        "s",
        "eldergate/v1/s/staff/cmd/S1",
        br#"{"v":1,"cmd":"shout","alert_id":4,"by":"S1","request_id":"r-9"}"#,
        true,
    )
    .unwrap_err();
    assert_eq!(u.rejection.reason, "malformed_json");
    assert_eq!(u.staff_request, Some((Some("r-9".to_string()), 4)));
}

#[test]
fn a_staff_command_acts_as_the_topics_staff_member() {
    let t = "eldergate/v1/s/staff/cmd/S1";
    for body in [
        &br#"{"v":1,"cmd":"ack","alert_id":4}"#[..],
        br#"{"v":1,"cmd":"ack","alert_id":4,"by":"S1"}"#,
    ] {
        match decode_publish("s", t, body, true) {
            Ok(Inbound::Staff(c)) => assert_eq!(c.by.as_deref(), Some("S1")),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn a_staff_command_naming_someone_else_is_refused_and_answered() {
    let u = decode_publish(
        "s",
        "eldergate/v1/s/staff/cmd/S1",
        br#"{"v":1,"cmd":"ack","alert_id":4,"by":"S9","request_id":"r-1"}"#,
        true,
    )
    .unwrap_err();
    assert_eq!(u.rejection.reason, "actor_mismatch");
    assert_eq!(u.staff_request, Some((Some("r-1".to_string()), 4)));
}

#[test]
fn a_topic_on_the_wrong_connection_is_refused() {
    let ok = br#"{"v":1,"seq":3,"action":"press"}"#;
    let u = decode_publish("s", "eldergate/v1/s/alarm/btn-1", ok, false).unwrap_err();
    assert_eq!(u.rejection.reason, "bad_topic");
}

proptest::proptest! {
    #[test]
    fn arbitrary_payloads_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
        let _ = classify("eldergate/v1/s/alarm/btn-1", &bytes);
        let _ = classify("eldergate/v1/s/staff/cmd/S1", &bytes);
        let _ = decode_publish("s", "eldergate/v1/s/tap/rdr-1", &bytes, false);
        let _ = decode_publish("s", "eldergate/v1/s/tele/btn-1/heartbeat", &bytes, false);
    }
}
