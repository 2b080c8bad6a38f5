//! What every gateway fuzz target checks, one function per parser of outside input.
//!
//! Shared by the cargo-fuzz targets (`fuzz_targets/*.rs`, `#[path]`-included) and by the stable
//! corpus replay `tests/tests/fuzz_corpus.rs`, so the committed corpus is run by `tests/run` on
//! every change without libFuzzer. Each function must not panic on any input; the asserts are
//! the parser's contract (a panic here is a finding).

#![allow(dead_code)]

use eldergate::canteen::rules::{ResidentFacts, RuleSet, Today};
use eldergate::ingest::decode_publish;

/// One target's check.
pub type Check = fn(&[u8]);

/// The targets, by name (the corpus directory of each).
pub const TARGETS: &[(&str, Check)] = &[
    ("mqtt_publish", mqtt_publish),
    ("config_toml", config_toml),
    ("roster_csv", roster_csv),
    ("canteen_rules", canteen_rules),
    ("http_bodies", http_bodies),
];

/// An MQTT publish as the gateway receives it: the first byte is the topic's length, then the
/// topic (lossy UTF-8, as rumqttc hands it over), then the payload; once per connection.
pub fn mqtt_publish(data: &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n).min(rest.len());
    let topic = String::from_utf8_lossy(&rest[..n]);
    let payload = &rest[n..];
    for alarm_conn in [true, false] {
        // Ok or a typed rejection with a reason label; never a panic.
        if let Err(e) = decode_publish("s1", &topic, payload, alarm_conn) {
            assert!(!e.rejection.reason.is_empty());
        }
    }
}

/// The configuration file (TOML, env overrides off): a config or the list of problems.
pub fn config_toml(data: &[u8]) {
    thread_local! {
        static DIR: tempfile::TempDir = tempfile::tempdir().expect("a temporary directory");
    }
    // A config may name files (rosters, rules) relative to itself; the fuzzer's inputs only
    // reach what is in this empty directory, or absolute paths. Device files such as
    // /dev/zero would block a read forever: skipped (an operator's config, not device input).
    if data.windows(5).any(|w| w == b"/dev/") || data.windows(6).any(|w| w == b"/proc/") {
        return;
    }
    DIR.with(|dir| {
        let path = dir.path().join("eldergate.toml");
        if std::fs::write(&path, data).is_err() {
            return;
        }
        match eldergate::config::load_with_env(&path, Vec::new()) {
            Ok(_) => {}
            Err(e) => assert!(!e.problems.is_empty(), "an error names its problems"),
        }
    });
}

/// The community roster CSV (the file and `POST /api/roster`): residents or problems.
pub fn roster_csv(data: &[u8]) {
    let (residents, problems) = eldergate::roster::parse(data, "fuzz.csv");
    if problems.is_empty() {
        // Every resident taken has an id.
        for id in residents.keys() {
            assert!(!id.is_empty());
        }
    }
}

/// A canteen rule file; a file that parses is asked for quotes that must keep the money
/// contract: 0 ≤ subsidy ≤ price, payable = price − subsidy.
pub fn canteen_rules(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(rules) = RuleSet::parse(text) else {
        return;
    };
    let date = jiff::civil::date(2026, 11, 30);
    let births = [
        jiff::civil::date(1930, 1, 1),
        jiff::civil::date(1956, 6, 15),
        jiff::civil::date(2020, 2, 29),
    ];
    let statuses: [&[&str]; 3] = [&[], &["dibao"], &["wubao", "disabled", "alone"]];
    for hour in [0, 7, 11, 12, 17, 23] {
        let time = jiff::civil::time(hour, 30, 0, 0);
        for (b, s) in births.iter().zip(statuses) {
            let who = ResidentFacts {
                birth_date: *b,
                statuses: s.iter().map(|x| x.to_string()).collect(),
            };
            for entered in [None, Some(0), Some(1), Some(1500), Some(i64::MAX), Some(-1)] {
                for today in [
                    Today::default(),
                    Today {
                        subsidy_fen: i64::MAX,
                        subsidized_in_period: u32::MAX,
                    },
                ] {
                    if let Ok(q) = rules.quote(date, time, &who, entered, today) {
                        assert!(q.subsidy_fen >= 0, "negative subsidy {q:?}");
                        assert!(q.subsidy_fen <= q.price_fen, "subsidy above price {q:?}");
                        assert_eq!(q.payable_fen, q.price_fen - q.subsidy_fen, "{q:?}");
                    }
                }
            }
        }
    }
}

/// The JSON bodies and query strings of the HTTP API, read exactly as the handlers read them
/// (axum's `Json` and `Query` extractors).
pub fn http_bodies(data: &[u8]) {
    use axum::extract::{Json, Query};
    use eldergate::http::{ActionBody, AdminBody, TopUpBody};
    let bytes = axum::body::Bytes::copy_from_slice(data);
    let _ = Json::<ActionBody>::from_bytes(&bytes);
    let _ = Json::<AdminBody>::from_bytes(&bytes);
    if let Ok(Json(t)) = Json::<TopUpBody>::from_bytes(&bytes) {
        // Read as written: no float, no wrap.
        let _ = t.amount_fen.checked_add(0);
    }
    let _ = Json::<serde_json::Value>::from_bytes(&bytes);
    if let Ok(q) = std::str::from_utf8(data) {
        if let Ok(uri) = format!("/api/roster?{q}").parse::<axum::http::Uri>() {
            let _ = Query::<eldergate::http::ImportQuery>::try_from_uri(&uri);
        }
    }
}
