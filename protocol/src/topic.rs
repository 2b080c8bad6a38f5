//! The MQTT topic scheme, version 1.
//!
//! ```text
//! eldergate/v1/{site}/alarm/{device}              device → gateway  alarm press / cancel / check-in (QoS 1)
//! eldergate/v1/{site}/tele/{device}/{kind}        device → gateway  telemetry, e.g. heartbeat (QoS 0 or 1)
//! eldergate/v1/{site}/tap/{reader}               reader → gateway  card tap (QoS 1)
//! eldergate/v1/{site}/down/{device}               gateway → device  acks, reader displays
//! eldergate/v1/{site}/staff/alerts                gateway → staff   alert raised / updated (QoS 1)
//! eldergate/v1/{site}/staff/alerts/{staff}        gateway → staff   the same, addressed to one person
//! eldergate/v1/{site}/staff/cmd/{staff}           staff → gateway   acknowledge / resolve as {staff} (QoS 1)
//! eldergate/v1/{site}/staff/results               gateway → staff   outcome of each staff command
//! eldergate/v1/{site}/gw/{gateway}/status         gateway           retained "online"/"offline" (last will)
//! ```
//!
//! Alarms and telemetry live in separate subtrees so the gateway can subscribe to them on separate
//! connections: an alarm never queues behind telemetry in one TCP stream.
//!
//! Parsing never panics and never allocates; every rejection says why ([`TopicError`]).

use core::fmt;

/// The first segment of every eldergate topic.
pub const ROOT: &str = "eldergate";

/// Longest site, gateway or device identifier accepted in a topic.
pub const MAX_ID_LEN: usize = 64;

/// A parsed device-to-gateway topic, borrowing from the topic string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpTopic<'a> {
    /// `eldergate/v1/{site}/alarm/{device}`
    Alarm {
        /// Site (community) id.
        site: &'a str,
        /// Device id.
        device: &'a str,
    },
    /// `eldergate/v1/{site}/tele/{device}/{kind}`
    Telemetry {
        /// Site (community) id.
        site: &'a str,
        /// Device id.
        device: &'a str,
        /// Telemetry kind, e.g. `heartbeat`.
        kind: &'a str,
    },
    /// `eldergate/v1/{site}/tap/{reader}`
    Tap {
        /// Site (community) id.
        site: &'a str,
        /// Reader (device) id.
        reader: &'a str,
    },
    /// `eldergate/v1/{site}/staff/cmd/{staff}`: the actor is the topic's staff id, which the
    /// broker's ACL ties to the publisher's username (`eldergate provision`).
    StaffCommand {
        /// Site (community) id.
        site: &'a str,
        /// Staff id of the person acting.
        staff: &'a str,
    },
}

/// Why a topic was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicError {
    /// The topic does not start with `eldergate/`.
    NotEldergate,
    /// The version segment is not `v1`.
    UnknownVersion,
    /// The topic has the right root and version but no known shape.
    UnknownShape,
    /// An identifier segment is empty, too long, or has characters outside `[A-Za-z0-9_.-]`.
    BadIdentifier,
}

impl fmt::Display for TopicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TopicError::NotEldergate => "topic does not start with eldergate/",
            TopicError::UnknownVersion => "topic version is not v1",
            TopicError::UnknownShape => {
                "topic is not one of the eldergate/v1 device or staff topics"
            }
            TopicError::BadIdentifier => {
                "an id in the topic is empty, longer than 64 bytes, or not [A-Za-z0-9_.-]"
            }
        })
    }
}

/// True when `id` is a usable site, gateway or device identifier.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

fn id(s: &str) -> Result<&str, TopicError> {
    if is_valid_id(s) {
        Ok(s)
    } else {
        Err(TopicError::BadIdentifier)
    }
}

/// Parses a topic a device or staff client published to.
pub fn parse_up(topic: &str) -> Result<UpTopic<'_>, TopicError> {
    let mut parts = topic.split('/');
    if parts.next() != Some(ROOT) {
        return Err(TopicError::NotEldergate);
    }
    if parts.next() != Some("v1") {
        return Err(TopicError::UnknownVersion);
    }
    let site = id(parts.next().ok_or(TopicError::UnknownShape)?)?;
    let section = parts.next().ok_or(TopicError::UnknownShape)?;
    let a = parts.next();
    let b = parts.next();
    if parts.next().is_some() {
        return Err(TopicError::UnknownShape);
    }
    match (section, a, b) {
        ("alarm", Some(device), None) => Ok(UpTopic::Alarm {
            site,
            device: id(device)?,
        }),
        ("tele", Some(device), Some(kind)) => Ok(UpTopic::Telemetry {
            site,
            device: id(device)?,
            kind: id(kind)?,
        }),
        ("staff", Some("cmd"), Some(staff)) => Ok(UpTopic::StaffCommand {
            site,
            staff: id(staff)?,
        }),
        ("tap", Some(reader), None) => Ok(UpTopic::Tap {
            site,
            reader: id(reader)?,
        }),
        _ => Err(TopicError::UnknownShape),
    }
}

/// Writes `eldergate/v1/{site}/{rest...}` into any [`fmt::Write`] sink (a `String`, a
/// `heapless::String`), so firmware can build topics without an allocator.
pub fn write_topic(out: &mut impl fmt::Write, site: &str, rest: &[&str]) -> fmt::Result {
    write!(out, "{ROOT}/v1/{site}")?;
    for part in rest {
        write!(out, "/{part}")?;
    }
    Ok(())
}

#[cfg(feature = "alloc")]
mod owned {
    use super::{write_topic, ROOT};
    use alloc::string::String;

    fn build(site: &str, rest: &[&str]) -> String {
        // Sized up front: one allocation (the gateway builds a `down/{device}` topic per ack).
        let len = ROOT.len()
            + "/v1/".len()
            + site.len()
            + rest.iter().map(|p| p.len() + 1).sum::<usize>();
        let mut s = String::with_capacity(len);
        // Writing into a String cannot fail.
        let _ = write_topic(&mut s, site, rest);
        s
    }

    /// `eldergate/v1/{site}/alarm/{device}`
    pub fn alarm(site: &str, device: &str) -> String {
        build(site, &["alarm", device])
    }
    /// `eldergate/v1/{site}/tele/{device}/{kind}`
    pub fn telemetry(site: &str, device: &str, kind: &str) -> String {
        build(site, &["tele", device, kind])
    }
    /// `eldergate/v1/{site}/tap/{reader}`
    pub fn tap(site: &str, reader: &str) -> String {
        build(site, &["tap", reader])
    }
    /// Subscription filter for every card tap of a site, any version.
    pub fn tap_filter(site: &str) -> String {
        alloc::format!("eldergate/+/{site}/tap/#")
    }
    /// `eldergate/v1/{site}/down/{device}`
    pub fn down(site: &str, device: &str) -> String {
        build(site, &["down", device])
    }
    /// `eldergate/v1/{site}/staff/alerts`
    pub fn staff_alerts(site: &str) -> String {
        build(site, &["staff", "alerts"])
    }
    /// `eldergate/v1/{site}/staff/alerts/{staff_id}`: alerts addressed to one person.
    pub fn staff_person(site: &str, staff_id: &str) -> String {
        build(site, &["staff", "alerts", staff_id])
    }
    /// `eldergate/v1/{site}/staff/cmd/{staff_id}`: commands by one person.
    pub fn staff_cmd(site: &str, staff_id: &str) -> String {
        build(site, &["staff", "cmd", staff_id])
    }
    /// Subscription filter for every staff command of a site, any version.
    pub fn staff_cmd_filter(site: &str) -> String {
        alloc::format!("eldergate/+/{site}/staff/cmd/+")
    }
    /// `eldergate/v1/{site}/staff/results`
    pub fn staff_results(site: &str) -> String {
        build(site, &["staff", "results"])
    }
    /// `eldergate/v1/{site}/gw/{gateway}/status`
    pub fn gateway_status(site: &str, gateway: &str) -> String {
        build(site, &["gw", gateway, "status"])
    }
    /// Subscription filter for every alarm topic of a site, any version (so that a wrong
    /// version reaches the gateway and is dead-lettered instead of vanishing).
    pub fn alarm_filter(site: &str) -> String {
        alloc::format!("eldergate/+/{site}/alarm/#")
    }
    /// Subscription filter for every telemetry topic of a site, any version.
    pub fn telemetry_filter(site: &str) -> String {
        alloc::format!("eldergate/+/{site}/tele/#")
    }
    /// Subscription filter for a device's downlink, for simulators.
    pub fn down_filter(site: &str) -> String {
        build(site, &["down", "+"])
    }
}
#[cfg(feature = "alloc")]
pub use owned::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alarm_topic_round_trips() {
        let t = alarm("demo", "btn-0001");
        assert_eq!(t, "eldergate/v1/demo/alarm/btn-0001");
        assert_eq!(
            parse_up(&t),
            Ok(UpTopic::Alarm {
                site: "demo",
                device: "btn-0001"
            })
        );
    }

    #[test]
    fn telemetry_topic_names_its_kind() {
        assert_eq!(
            parse_up("eldergate/v1/s/tele/btn-1/heartbeat"),
            Ok(UpTopic::Telemetry {
                site: "s",
                device: "btn-1",
                kind: "heartbeat"
            })
        );
    }

    #[test]
    fn a_staff_command_names_its_actor_in_the_topic() {
        assert_eq!(
            parse_up(&staff_cmd("s", "S009")),
            Ok(UpTopic::StaffCommand {
                site: "s",
                staff: "S009"
            })
        );
        // The shared topic of before is gone: nobody could be told apart on it.
        assert_eq!(
            parse_up("eldergate/v1/s/staff/cmd"),
            Err(TopicError::UnknownShape)
        );
        assert_eq!(
            parse_up("eldergate/v1/s/staff/cmd/#"),
            Err(TopicError::BadIdentifier)
        );
    }

    #[test]
    fn wrong_version_is_its_own_error() {
        assert_eq!(
            parse_up("eldergate/v2/s/alarm/b"),
            Err(TopicError::UnknownVersion)
        );
    }

    #[test]
    fn extra_or_missing_levels_are_unknown_shapes() {
        for t in [
            "eldergate/v1/s/alarm",
            "eldergate/v1/s/alarm/b/extra",
            "eldergate/v1/s/tele/b",
            "eldergate/v1/s/bogus/b",
            "eldergate/v1/s",
        ] {
            assert_eq!(parse_up(t), Err(TopicError::UnknownShape), "{t}");
        }
    }

    #[test]
    fn wildcards_and_odd_bytes_are_not_identifiers() {
        assert_eq!(
            parse_up("eldergate/v1/s/alarm/+"),
            Err(TopicError::BadIdentifier)
        );
        assert_eq!(
            parse_up("eldergate/v1/s/alarm/"),
            Err(TopicError::BadIdentifier)
        );
        assert_eq!(
            parse_up("other/v1/s/alarm/b"),
            Err(TopicError::NotEldergate)
        );
    }

    proptest::proptest! {
        #[test]
        fn parsing_any_string_never_panics(s in "\\PC{0,80}") {
            let _ = parse_up(&s);
        }
    }
}
