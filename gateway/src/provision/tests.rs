use super::*;
use std::os::unix::fs::PermissionsExt;

fn config(dir: &Path, extra_devices: &str) -> Loaded {
    let text = format!(
        r#"
site_id = "s1"
gateway_id = "gw-1"
data_dir = "/tmp/x"
[broker]
mode = "external"
url = "mqtt://127.0.0.1:1883"
username = "gw-1"
password = "unused"
[central]
url = "postgres://127.0.0.1/central"
[[devices]]
id = "btn-1"
kind = "alarm_button"
resident_id = "R1"
[[devices]]
id = "rdr-1"
kind = "card_reader"
[[devices]]
id = "btn-serial"
kind = "alarm_button"
link = "serial"
resident_id = "R1"
{extra_devices}
[[staff]]
id = "S1"
name = "Duty"
role = "duty"
[[staff]]
id = "S2"
name = "Manager"
role = "manager"
"#
    );
    let f = dir.join("c.toml");
    std::fs::write(&f, text).unwrap();
    crate::config::load_with_env(&f, Vec::new()).unwrap()
}

fn csv_rows(dir: &Path) -> BTreeMap<String, [String; 3]> {
    read_csv(&dir.join(CSV_FILE)).unwrap()
}

#[test]
fn every_mqtt_identity_gets_a_secret_and_the_files_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let loaded = config(dir.path(), "");
    let out = dir.path().join("out");
    let s = provision(&loaded, &out).unwrap();
    assert_eq!(
        s.added,
        ["gw-1", "btn-1", "rdr-1", "S1", "S2"],
        "serial devices get none"
    );
    let rows = csv_rows(&out);
    assert_eq!(rows.len(), 5);
    for f in [PASSWD_FILE, ACL_FILE, CSV_FILE, ENV_FILE] {
        let mode = std::fs::metadata(out.join(f)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    let passwd = std::fs::read_to_string(out.join(PASSWD_FILE)).unwrap();
    for (user, [_, _, pw]) in &rows {
        let line = passwd
            .lines()
            .find(|l| l.starts_with(&format!("{user}:")))
            .unwrap();
        assert!(passwd::verify(pw, &line[user.len() + 1..]), "{user}");
        assert!(
            !passwd.contains(pw.as_str()),
            "no plaintext in the password file"
        );
    }
    let env = std::fs::read_to_string(out.join(ENV_FILE)).unwrap();
    assert!(env.contains(&format!("ELDERGATE__BROKER__PASSWORD={}", rows["gw-1"][2])));
}

#[test]
fn a_second_run_adds_new_devices_and_changes_no_existing_secret() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    provision(&config(dir.path(), ""), &out).unwrap();
    let before_rows = csv_rows(&out);
    let before_passwd = std::fs::read_to_string(out.join(PASSWD_FILE)).unwrap();

    let again = provision(&config(dir.path(), ""), &out).unwrap();
    assert!(again.added.is_empty());
    assert_eq!(csv_rows(&out), before_rows);
    assert_eq!(
        std::fs::read_to_string(out.join(PASSWD_FILE)).unwrap(),
        before_passwd
    );

    let more = "[[devices]]\nid = \"btn-2\"\nkind = \"alarm_button\"\nresident_id = \"R1\"\n";
    let s = provision(&config(dir.path(), more), &out).unwrap();
    assert_eq!(s.added, ["btn-2"]);
    let after = csv_rows(&out);
    for (user, row) in &before_rows {
        assert_eq!(&after[user], row, "{user}'s secret changed");
    }
    let passwd = std::fs::read_to_string(out.join(PASSWD_FILE)).unwrap();
    assert!(
        passwd.starts_with(&before_passwd),
        "existing hash lines are kept as they were"
    );
}

#[test]
fn a_lost_password_line_is_rebuilt_from_the_secret_already_handed_out() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    provision(&config(dir.path(), ""), &out).unwrap();
    let rows = csv_rows(&out);
    std::fs::write(out.join(PASSWD_FILE), "").unwrap();
    let s = provision(&config(dir.path(), ""), &out).unwrap();
    assert!(s.added.is_empty());
    assert_eq!(csv_rows(&out), rows);
    let passwd = std::fs::read_to_string(out.join(PASSWD_FILE)).unwrap();
    let line = passwd.lines().find(|l| l.starts_with("btn-1:")).unwrap();
    assert!(passwd::verify(&rows["btn-1"][2], &line["btn-1:".len()..]));
}

#[test]
fn a_device_that_left_the_registry_keeps_its_line_but_loses_every_topic() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let more = "[[devices]]\nid = \"btn-2\"\nkind = \"alarm_button\"\nresident_id = \"R1\"\n";
    provision(&config(dir.path(), more), &out).unwrap();
    let s = provision(&config(dir.path(), ""), &out).unwrap();
    assert_eq!(s.stale, ["btn-2"]);
    let acl = std::fs::read_to_string(out.join(ACL_FILE)).unwrap();
    assert!(!acl.contains("btn-2"));
}

#[test]
fn the_acl_grants_each_kind_only_its_own_topics() {
    let dir = tempfile::tempdir().unwrap();
    let acl = acl(&config(dir.path(), ""));
    assert!(acl.contains("user rdr-1\ntopic write eldergate/v1/s1/tap/rdr-1\n"));
    assert!(acl.contains("user btn-1\ntopic write eldergate/v1/s1/alarm/btn-1\n"));
    assert!(
        acl.contains("topic read eldergate/+/s1/tap/#"),
        "the gateway reads taps"
    );
    assert!(acl.contains("user S1\ntopic write eldergate/v1/s1/staff/cmd/S1\n"));
    assert!(!acl.contains("btn-serial"));
    assert!(!acl.contains("pattern"), "no rule applies to every user");
    assert!(
        !acl.contains("write eldergate/v1/s1/staff/cmd\n"),
        "no shared command topic"
    );
}

#[test]
fn a_staff_id_equal_to_a_device_id_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut loaded = config(dir.path(), "");
    let mut s = loaded.staff["S1"].clone();
    s.id = "btn-1".into();
    loaded.staff.insert("btn-1".into(), s);
    let e = provision(&loaded, &dir.path().join("out")).unwrap_err();
    assert!(
        e.to_string()
            .contains("\"btn-1\" is both alarm_button and staff"),
        "{e}"
    );
    assert!(!dir.path().join("out").join(PASSWD_FILE).exists());
}
