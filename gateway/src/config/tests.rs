use super::*;
use std::io::Write;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    let mut f = std::fs::File::create(&p).unwrap();
    f.write_all(text.as_bytes()).unwrap();
    p
}

const GOOD: &str = r#"
site_id = "s1"
gateway_id = "gw-1"
data_dir = "/tmp/x"
[broker]
mode = "external"
url = "mqtt://127.0.0.1:1883"
username = "gw-1"
[central]
url = "postgres://127.0.0.1/central"
[[devices]]
id = "btn-1"
kind = "alarm_button"
resident_id = "R1"
[[staff]]
id = "S1"
name = "Duty"
role = "duty"
[escalation.high]
steps = [{ after_s = 0, notify = ["grid_worker"] }, { after_s = 60, notify = ["role:duty"] }]
repeat_s = 60
"#;

fn no_env() -> Vec<(String, String)> {
    Vec::new()
}

#[test]
fn a_good_config_loads_with_the_password_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "c.toml", GOOD);
    let env = vec![(
        "ELDERGATE__BROKER__PASSWORD".to_string(),
        "123456".to_string(),
    )];
    let l = load_with_env(&f, env).unwrap();
    assert_eq!(l.config.broker.password.as_deref(), Some("123456"));
    assert_eq!(l.config.escalation.high.steps.len(), 2);
    assert!(l.devices.contains_key("btn-1"));
}

#[test]
fn a_missing_password_is_a_problem_not_a_default() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "c.toml", GOOD);
    let e = load_with_env(&f, no_env()).unwrap_err();
    assert!(
        e.problems.iter().any(|p| p.path == "broker.password"),
        "{e}"
    );
}

#[test]
fn every_unknown_key_is_reported_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let text = GOOD.replace("[central]", "colour = \"red\"\n[central]\nspeed = 3");
    let f = write(dir.path(), "c.toml", &format!("bogus = 1\n{text}"));
    let env = vec![("ELDERGATE__BROKER__PASSWORD".to_string(), "x".to_string())];
    let e = load_with_env(&f, env).unwrap_err();
    let paths: Vec<_> = e.problems.iter().map(|p| p.path.as_str()).collect();
    assert!(paths.contains(&"bogus"), "{paths:?}");
    assert!(paths.contains(&"broker.colour"), "{paths:?}");
    assert!(paths.contains(&"central.speed"), "{paths:?}");
}

#[test]
fn all_semantic_problems_are_reported_together() {
    let dir = tempfile::tempdir().unwrap();
    let text = GOOD
        .replace("mqtt://127.0.0.1:1883", "ftp://x")
        .replace("postgres://127.0.0.1/central", "mysql://x")
        .replace("role:duty", "S404")
        .replace("after_s = 60", "after_s = 0")
        .replace("site_id = \"s1\"", "site_id = \"bad site\"");
    let f = write(dir.path(), "c.toml", &text);
    let env = vec![("ELDERGATE__BROKER__PASSWORD".to_string(), "x".to_string())];
    let e = load_with_env(&f, env).unwrap_err();
    let paths: Vec<_> = e.problems.iter().map(|p| p.path.as_str()).collect();
    for want in [
        "broker.url",
        "central.url",
        "escalation.high.steps[1].notify[0]",
        "escalation.high.steps[1].after_s",
        "site_id",
    ] {
        assert!(paths.contains(&want), "{want} missing from {paths:?}");
    }
}

#[test]
fn duplicate_devices_and_bad_csv_rows_name_their_place() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "d.csv",
        "device_id,kind,link,resident_id,location,heartbeat_s\nbtn-1,alarm_button,mqtt,R1,here,300\nbtn-2,toaster,mqtt,,,300\n",
    );
    let text = format!("device_csv = \"d.csv\"\n{GOOD}");
    let f = write(dir.path(), "c.toml", &text);
    let env = vec![("ELDERGATE__BROKER__PASSWORD".to_string(), "x".to_string())];
    let e = load_with_env(&f, env).unwrap_err();
    let msgs: Vec<String> = e.problems.iter().map(|p| p.to_string()).collect();
    assert!(
        msgs.iter()
            .any(|m| m.starts_with("devices[0].id") && m.contains("duplicate")),
        "{msgs:?}"
    );
    assert!(msgs.iter().any(|m| m.starts_with("d.csv:3")), "{msgs:?}");
}

#[test]
fn environment_overrides_keep_the_type_of_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "c.toml",
        &GOOD.replace("[central]\n", "[central]\nbatch_size = 10\n"),
    );
    let env = vec![
        ("ELDERGATE__BROKER__PASSWORD".to_string(), "x".to_string()),
        (
            "ELDERGATE__CENTRAL__BATCH_SIZE".to_string(),
            "77".to_string(),
        ),
        ("ELDERGATE__SITE_ID".to_string(), "s2".to_string()),
    ];
    let l = load_with_env(&f, env).unwrap();
    assert_eq!(l.config.central.batch_size, 77);
    assert_eq!(l.config.site_id, "s2");
}

#[test]
#[cfg(feature = "embedded-broker")]
fn the_shipped_example_is_valid() {
    let f = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/eldergate.example.toml");
    let l = load_with_env(&f, no_env()).unwrap();
    assert_eq!(l.devices.len(), 579);
    assert_eq!(l.residents.len(), 1600);
    assert!(l.residents.values().any(|r| r.lives_alone()));
}

/// The shipped example runs the embedded broker: a build without it names that and only that.
#[test]
#[cfg(not(feature = "embedded-broker"))]
fn an_embedded_broker_is_refused_by_a_build_without_one() {
    let f = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/eldergate.example.toml");
    let e = load_with_env(&f, no_env()).unwrap_err();
    let paths: Vec<&str> = e.problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["broker.mode"]);
    assert!(e
        .to_string()
        .contains("build with --features embedded-broker"));
}

#[test]
fn listening_beyond_loopback_needs_a_declared_tls_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "c.toml",
        &format!("{GOOD}\n[http]\nlisten = \"0.0.0.0:8080\"\n"),
    );
    let env = vec![("ELDERGATE__BROKER__PASSWORD".to_string(), "x".to_string())];
    let e = load_with_env(&f, env).unwrap_err();
    assert!(e.problems.iter().any(|p| p.path == "http.listen"));
    let f = write(
        dir.path(),
        "p.toml",
        &format!("{GOOD}\n[http]\nlisten = \"0.0.0.0:8080\"\nbehind_proxy = true\n"),
    );
    let env = vec![("ELDERGATE__BROKER__PASSWORD".to_string(), "x".to_string())];
    let e = load_with_env(&f, env).unwrap_err();
    assert!(
        e.problems.iter().any(|p| p.path == "http.trusted_proxies"),
        "a proxy without its addresses: anyone's X-Forwarded-For would be believed"
    );
    let f = write(
        dir.path(),
        "q.toml",
        &format!("{GOOD}\n[http]\nlisten = \"0.0.0.0:8080\"\nbehind_proxy = true\ntrusted_proxies = [\"10.0.0.5\"]\n"),
    );
    let env = vec![("ELDERGATE__BROKER__PASSWORD".to_string(), "x".to_string())];
    assert!(load_with_env(&f, env).is_ok(), "a declared proxy allows it");
}

#[test]
fn a_serial_port_takes_only_standard_baud_rates() {
    let dir = tempfile::tempdir().unwrap();
    let env = || vec![("ELDERGATE__BROKER__PASSWORD".to_string(), "x".to_string())];
    let ports = "[[serial]]\nport = \"/dev/ttyUSB0\"\nbaud = 7\n[[serial]]\nport = \"/dev/ttyUSB1\"\nbaud = 9600\n[[serial]]\nport = \"/dev/ttyUSB2\"\n[[serial]]\nport = \"\"\nbaud = 115200\n";
    let f = write(dir.path(), "c.toml", &format!("{GOOD}\n{ports}"));
    let e = load_with_env(&f, env()).unwrap_err();
    let msgs: Vec<String> = e.problems.iter().map(|p| p.to_string()).collect();
    let baud = msgs
        .iter()
        .find(|m| m.starts_with("serial[0].baud"))
        .unwrap_or_else(|| panic!("{msgs:?}"));
    assert!(baud.contains("7 is not a standard baud rate"), "{baud}");
    assert!(
        baud.contains("1200, 2400") && baud.contains("921600"),
        "{baud}"
    );
    assert!(
        msgs.iter().any(|m| m.starts_with("serial[3].port")),
        "{msgs:?}"
    );
    assert_eq!(
        msgs.len(),
        2,
        "9600 and the default 115200 are fine: {msgs:?}"
    );

    let good = ports.replace("baud = 7", "baud = 921600").replace(
        "port = \"\"",
        "port = \"/dev/serial/by-id/usb-FTDI_FT232R-if00-port0\"",
    );
    let f = write(dir.path(), "c.toml", &format!("{GOOD}\n{good}"));
    let l = load_with_env(&f, env()).unwrap();
    let bauds: Vec<u32> = l.config.serial.iter().map(|p| p.baud).collect();
    assert_eq!(bauds, [921_600, 9_600, 115_200, 115_200]);
}

#[test]
fn live_streams_cannot_take_every_http_connection() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "c.toml",
        &format!("{GOOD}\n[http]\nmax_connections = 64\nmax_sse_clients = 64\nheader_read_timeout_s = 0\n"),
    );
    let env = vec![("ELDERGATE__BROKER__PASSWORD".to_string(), "x".to_string())];
    let e = load_with_env(&f, env).unwrap_err();
    assert!(e.problems.iter().any(|p| p.path == "http.max_connections"));
    assert!(e
        .problems
        .iter()
        .any(|p| p.path == "http.header_read_timeout_s"));
}

#[test]
fn a_retention_shorter_than_two_days_or_the_dedupe_window_is_refused_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let env = vec![("ELDERGATE__BROKER__PASSWORD".to_string(), "x".to_string())];
    let text = format!(
        "{GOOD}\n[journal]\ndedupe_window_s = 259200\n[retention]\nroutine_days = 1\nrecords_days = 2\ndead_letter_days = 0\nwebhook_days = 0\ninterval_s = 0\n"
    );
    let f = write(dir.path(), "c.toml", &text);
    let e = load_with_env(&f, env.clone()).unwrap_err();
    let keys: Vec<&str> = e.problems.iter().map(|p| p.path.as_str()).collect();
    for key in [
        "retention.routine_days",
        "retention.records_days",
        "retention.interval_s",
    ] {
        assert!(keys.contains(&key), "{key} not refused: {e}");
    }
    // 0 = keep forever is allowed except for routine readings.
    assert!(!keys.contains(&"retention.dead_letter_days"), "{e}");
    // The defaults are valid.
    let f = write(dir.path(), "d.toml", GOOD);
    let l = load_with_env(&f, env).unwrap();
    assert_eq!(l.config.retention.routine_days, 7);
    assert_eq!(l.config.retention.records_days, 400);
}

#[test]
fn tls_files_with_a_plaintext_url_are_refused_not_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let ca = write(dir.path(), "ca.pem", "-----BEGIN CERTIFICATE-----\n");
    let text = GOOD.replace(
        "username = \"gw-1\"",
        &format!(
            "username = \"gw-1\"\npassword = \"x\"\nca_file = \"{}\"",
            ca.display()
        ),
    );
    let f = write(dir.path(), "c.toml", &text);
    let e = load_with_env(&f, no_env()).unwrap_err();
    assert!(
        e.problems
            .iter()
            .any(|p| p.path == "broker.ca_file"
                && p.message.contains("never falls back to plaintext")),
        "{e}"
    );
    let tls = text.replace("mqtt://127.0.0.1:1883", "mqtts://127.0.0.1:8883");
    let f = write(dir.path(), "c.toml", &tls);
    load_with_env(&f, no_env()).unwrap();
}

#[test]
fn a_client_certificate_without_its_key_or_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cert = write(dir.path(), "c.pem", "-----BEGIN CERTIFICATE-----\n");
    let text = GOOD
        .replace("mqtt://127.0.0.1:1883", "mqtts://127.0.0.1:8883")
        .replace(
            "username = \"gw-1\"",
            &format!(
                "username = \"gw-1\"\npassword = \"x\"\nclient_cert = \"{}\"",
                cert.display()
            ),
        );
    let f = write(dir.path(), "c.toml", &text);
    let e = load_with_env(&f, no_env()).unwrap_err();
    let paths: Vec<&str> = e.problems.iter().map(|p| p.path.as_str()).collect();
    assert!(paths.contains(&"broker.client_cert"), "{e}");
    assert!(paths.contains(&"broker.ca_file"), "{e}");
}

#[test]
fn an_embedded_broker_beyond_loopback_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for listen in ["0.0.0.0:1883", "192.168.1.10:1883", "[::]:1883"] {
        let text = GOOD.replace(
            "mode = \"external\"\nurl = \"mqtt://127.0.0.1:1883\"\nusername = \"gw-1\"",
            &format!("mode = \"embedded\"\nlisten = \"{listen}\""),
        );
        let f = write(dir.path(), "c.toml", &text);
        let e = load_with_env(&f, no_env()).unwrap_err();
        assert!(
            e.problems
                .iter()
                .any(|p| p.path == "broker.listen" && p.message.contains("no authentication")),
            "{listen}: {e}"
        );
    }
    let text = GOOD.replace(
        "mode = \"external\"\nurl = \"mqtt://127.0.0.1:1883\"\nusername = \"gw-1\"",
        "mode = \"embedded\"\nlisten = \"127.0.0.1:1883\"",
    );
    let f = write(dir.path(), "c.toml", &text);
    let problems = load_with_env(&f, no_env())
        .err()
        .map(|e| e.problems)
        .unwrap_or_default();
    assert!(
        !problems.iter().any(|p| p.path == "broker.listen"),
        "{problems:?}"
    );
}

#[test]
fn a_write_batch_outside_1_to_1000_is_refused_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let env = vec![("ELDERGATE__BROKER__PASSWORD".to_string(), "x".to_string())];
    let with = |v: &str| {
        GOOD.replace(
            "username = \"gw-1\"",
            &format!("username = \"gw-1\"\nwrite_batch = {v}"),
        )
    };
    for bad in ["0", "1001", "65535"] {
        let f = write(dir.path(), "c.toml", &with(bad));
        let e = load_with_env(&f, env.clone()).unwrap_err();
        assert!(
            e.problems.iter().any(|p| p.path == "broker.write_batch"),
            "{bad}: {e}"
        );
    }
    // Not a number of the key's type: a problem, not a crash.
    for absurd in ["-1", "70000", "1e400", "\"64\""] {
        let f = write(dir.path(), "c.toml", &with(absurd));
        assert!(load_with_env(&f, env.clone()).is_err(), "{absurd}");
    }
    for good in ["1", "1000"] {
        let f = write(dir.path(), "c.toml", &with(good));
        let l = load_with_env(&f, env.clone()).unwrap();
        assert_eq!(l.config.broker.write_batch.to_string(), good);
    }
    let f = write(dir.path(), "d.toml", GOOD);
    assert_eq!(
        load_with_env(&f, env).unwrap().config.broker.write_batch,
        64
    );
}
