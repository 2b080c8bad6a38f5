//! The district's central PostgreSQL (docs/adr/0014): a migrator role runs the schema, each
//! gateway forwards under a role of its own that may only INSERT and SELECT its own rows
//! (row-level security), dashboards read, and the district views give the right numbers.
//! Everything through the real `eldergate` binary and a real PostgreSQL.

use eldergate::central::CentralStore;
use eldergate::journal::{Epochs, EventRow};
use eldergate_e2e::*;
use eldergate_protocol::payload::AlarmAction;
use eldergate_sim::Fleet;
use sqlx::{PgPool, Row};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A central database owned by a migrator role of its own (not a superuser), migrated by
/// `eldergate central migrate`.
struct District {
    db: TestDb,
    migrator: String,
    migrator_url: String,
    roles: Vec<String>,
    dir: tempfile::TempDir,
}

fn url_as(db: &TestDb, role: &str, password: &str) -> String {
    format!(
        "postgres://{role}:{password}@{}/{}",
        pg_host_port(),
        db.name
    )
}

fn eldergate(args: &[&str], migrator_url: &str) -> std::process::Output {
    Command::new(bin_dir().join("eldergate"))
        .args(args)
        .env("ELDERGATE_CENTRAL_MIGRATOR_URL", migrator_url)
        .output()
        .expect("the eldergate binary runs")
}

impl District {
    async fn create() -> District {
        let db = TestDb::create().await.unwrap();
        let admin = PgPool::connect(&pg_admin_url()).await.unwrap();
        let migrator = format!("eg_mig_{}", rand::random::<u32>());
        sqlx::query(&format!(
            "CREATE ROLE {migrator} LOGIN PASSWORD 'mig' CREATEROLE"
        ))
        .execute(&admin)
        .await
        .unwrap();
        sqlx::query(&format!("ALTER DATABASE {} OWNER TO {migrator}", db.name))
            .execute(&admin)
            .await
            .unwrap();
        let migrator_url = url_as(&db, &migrator, "mig");
        let out = eldergate(&["central", "migrate"], &migrator_url);
        assert!(
            out.status.success(),
            "central migrate: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        District {
            db,
            migrator,
            migrator_url,
            roles: Vec::new(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// `eldergate central add-gateway`; returns (role, password file).
    fn add_gateway(&mut self, gateway_id: &str, site_id: &str) -> (String, PathBuf) {
        let file = self.dir.path().join(format!("{gateway_id}.pw"));
        let out = eldergate(
            &[
                "central",
                "add-gateway",
                "--gateway-id",
                gateway_id,
                "--site-id",
                site_id,
                "--password-file",
                file.to_str().unwrap(),
            ],
            &self.migrator_url,
        );
        assert!(
            out.status.success(),
            "add-gateway: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let password = std::fs::read_to_string(&file).unwrap();
        let printed = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            !printed.contains(password.trim()),
            "the password was printed: {printed}"
        );
        let role = format!("eldergate_gw_{gateway_id}");
        self.roles.push(role.clone());
        (role, file)
    }

    fn role_url(&self, role: &str, password_file: &Path) -> String {
        let pw = std::fs::read_to_string(password_file).unwrap();
        url_as(&self.db, role, pw.trim())
    }

    async fn admin(&self) -> PgPool {
        self.db.pool().await.unwrap()
    }

    async fn drop(self) {
        self.db.drop_db().await;
        if let Ok(admin) = PgPool::connect(&pg_admin_url()).await {
            for r in self.roles.iter().chain(std::iter::once(&self.migrator)) {
                let _ = sqlx::query(&format!("DROP ROLE IF EXISTS \"{r}\""))
                    .execute(&admin)
                    .await;
            }
        }
    }
}

/// One id per test run, so parallel tests never share a (cluster-wide) role.
fn unique(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::random::<u32>())
}

/// A gateway of its own community (its own broker) forwarding as `role` with its password file.
async fn district_gateway(
    broker: &Mosquitto,
    gateway_id: &str,
    url: &str,
    password_file: &Path,
    extra: &str,
) -> Gateway {
    let mut spec = GatewaySpec::new(broker.port, url.to_string(), 5);
    spec.extra = extra.to_string();
    let mut gw = Gateway::prepare(&spec, None).unwrap();
    let config = std::fs::read_to_string(&gw.config).unwrap();
    let config = config
        .replace(
            "gateway_id = \"gw-test\"",
            &format!("gateway_id = \"{gateway_id}\""),
        )
        .replace(
            &format!("url = \"{url}\""),
            &format!(
                "url = \"{url}\"\npassword_file = \"{}\"",
                password_file.display()
            ),
        );
    std::fs::write(&gw.config, config).unwrap();
    gw.spawn().await.unwrap();
    gw
}

#[tokio::test(flavor = "multi_thread")]
async fn two_gateways_forward_at_once_under_their_own_roles_without_collisions() {
    let mut d = District::create().await;
    let (a, b) = (unique("gw-a"), unique("gw-b"));
    let (role_a, pw_a) = d.add_gateway(&a, "site-a");
    let (role_b, pw_b) = d.add_gateway(&b, "site-b");
    // The URL names the role only; the password comes from the file add-gateway wrote.
    let url_a = format!("postgres://{role_a}@{}/{}", pg_host_port(), d.db.name);
    let url_b = format!("postgres://{role_b}@{}/{}", pg_host_port(), d.db.name);
    let (broker_a, broker_b) = (Mosquitto::start().unwrap(), Mosquitto::start().unwrap());
    let gw_a = district_gateway(&broker_a, &a, &url_a, &pw_a, "").await;
    let gw_b = district_gateway(&broker_b, &b, &url_b, &pw_b, "[log]\nformat = \"json\"\n").await;
    let fleet_a = Fleet::start(fleet_options(broker_a.port, "fa"))
        .await
        .unwrap();
    let fleet_b = Fleet::start(fleet_options(broker_b.port, "fb"))
        .await
        .unwrap();
    // The same button ids and, likely, overlapping device and gateway seqs in both communities.
    const ROUNDS: usize = 20;
    for _ in 0..ROUNDS {
        for i in 1..=5 {
            fleet_a.send(&button(i), AlarmAction::Press).await;
            fleet_b.send(&button(i), AlarmAction::Press).await;
        }
    }
    assert!(fleet_a.wait_all_acked(Duration::from_secs(120)).await);
    assert!(fleet_b.wait_all_acked(Duration::from_secs(120)).await);
    let admin = d.admin().await;
    let counts = eventually(
        Duration::from_secs(120),
        "both gateways' presses at central",
        || {
            let admin = admin.clone();
            let (a, b) = (a.clone(), b.clone());
            async move {
                let rows = sqlx::query(
                "SELECT gateway_id, site_id, count(DISTINCT (device_id, device_seq)) FROM events
                 WHERE kind = 'alarm_press' GROUP BY 1, 2 ORDER BY 1",
            )
            .fetch_all(&admin)
            .await?;
                let got: Vec<(String, String, i64)> = rows
                    .iter()
                    .map(|r| (r.get(0), r.get(1), r.get(2)))
                    .collect();
                let want = (ROUNDS * 5) as i64;
                // Both test gateways use the harness's site id; the gateway id keeps them apart.
                Ok((got == vec![(a, SITE.into(), want), (b, SITE.into(), want)]).then_some(got))
            }
        },
    )
    .await
    .unwrap();
    println!("central holds {counts:?}");
    // Each gateway sees its own rows only, through its own role.
    for (role, pw, id) in [(&role_a, &pw_a, &a), (&role_b, &pw_b, &b)] {
        let pool = PgPool::connect(&d.role_url(role, pw)).await.unwrap();
        let seen: Vec<String> = sqlx::query_scalar("SELECT DISTINCT gateway_id FROM events")
            .fetch_all(&pool)
            .await
            .unwrap();
        assert_eq!(&seen, &vec![id.clone()]);
    }
    // The password is in no log; the JSON gateway logs JSON, one object a line.
    for (gw, pw) in [(&gw_a, &pw_a), (&gw_b, &pw_b)] {
        let log = std::fs::read_to_string(gw.log_path()).unwrap();
        let pw = std::fs::read_to_string(pw).unwrap();
        assert!(
            !log.contains(pw.trim()),
            "the central password is in the log"
        );
    }
    let log_b = std::fs::read_to_string(gw_b.log_path()).unwrap();
    let lines: Vec<&str> = log_b.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for l in lines {
        serde_json::from_str::<serde_json::Value>(l)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}"));
    }
    drop((gw_a, gw_b));
    d.drop().await;
}

fn row(
    seq: i64,
    kind: &str,
    device: Option<&str>,
    alert: Option<i64>,
    at: &str,
    body: serde_json::Value,
) -> EventRow {
    EventRow {
        seq,
        kind: kind.into(),
        device_id: device.map(str::to_string),
        device_seq: None,
        alert_id: alert,
        received_at: at.into(),
        device_time: None,
        body: body.to_string(),
    }
}

/// Two gateways (sites `site-a`, `site-b`) added to the district, each connected as its own role.
struct TwoGateways {
    a: String,
    b: String,
    role_a: String,
    pw_a: std::path::PathBuf,
    store_a: CentralStore,
    store_b: CentralStore,
    _dir: tempfile::TempDir,
}

impl TwoGateways {
    async fn add(d: &mut District) -> TwoGateways {
        let (a, b) = (unique("gw-a"), unique("gw-b"));
        let (role_a, pw_a) = d.add_gateway(&a, "site-a");
        let (role_b, pw_b) = d.add_gateway(&b, "site-b");
        let dir = tempfile::tempdir().unwrap();
        let store_a = CentralStore::connect(&d.role_url(&role_a, &pw_a), dir.path(), None)
            .await
            .unwrap();
        let store_b = CentralStore::connect(&d.role_url(&role_b, &pw_b), dir.path(), None)
            .await
            .unwrap();
        TwoGateways {
            a,
            b,
            role_a,
            pw_a,
            store_a,
            store_b,
            _dir: dir,
        }
    }
}

/// The SQLSTATE of a refused statement.
async fn refused(pool: &PgPool, sql: &str) -> String {
    match sqlx::query(sql).execute(pool).await {
        Ok(r) => panic!("{sql} was allowed ({} rows)", r.rows_affected()),
        Err(sqlx::Error::Database(e)) => e.code().map(|c| c.to_string()).unwrap_or_default(),
        Err(e) => panic!("{sql}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_role_cannot_update_delete_or_read_another_gateways_rows() {
    let mut d = District::create().await;
    let TwoGateways {
        a,
        b,
        role_a,
        pw_a,
        store_a,
        store_b,
        _dir,
    } = TwoGateways::add(&mut d).await;
    let rows: Vec<EventRow> = (1..=10)
        .map(|s| {
            row(
                s,
                "alarm_press",
                Some("btn-0001"),
                None,
                "2026-11-02T01:02:03.000Z",
                serde_json::json!({}),
            )
        })
        .collect();
    let epochs = Epochs::default();
    // The same (seq) at both gateways; a retry of a batch is a repeat.
    store_a.insert(&a, "site-a", &epochs, &rows).await.unwrap();
    store_a
        .insert(&a, "site-a", &epochs, &rows[3..])
        .await
        .unwrap();
    store_b.insert(&b, "site-b", &epochs, &rows).await.unwrap();
    // A gateway writing under another gateway's id is refused, whole.
    let err = store_a
        .insert(
            &b,
            "site-b",
            &epochs,
            &[row(
                99,
                "x",
                None,
                None,
                "2026-11-02T01:02:03.000Z",
                serde_json::json!({}),
            )],
        )
        .await;
    assert!(err.is_err(), "gateway A wrote a row as gateway B");
    let admin = d.admin().await;
    let per: Vec<(String, i64)> =
        sqlx::query_as("SELECT gateway_id, count(*) FROM events GROUP BY 1 ORDER BY 1")
            .fetch_all(&admin)
            .await
            .unwrap();
    assert_eq!(per, vec![(a.clone(), 10), (b.clone(), 10)]);

    let pool_a = PgPool::connect(&d.role_url(&role_a, &pw_a)).await.unwrap();
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE gateway_id = $1")
        .bind(&b)
        .fetch_one(&pool_a)
        .await
        .unwrap();
    assert_eq!(seen, 0, "gateway A read gateway B's rows");
    let own: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool_a)
        .await
        .unwrap();
    assert_eq!(own, 10);
    // 42501 insufficient_privilege; 42501 too for "must be owner" and an RLS violation.
    for sql in [
        "UPDATE events SET kind = 'changed'".to_string(),
        format!("UPDATE events SET kind = 'changed' WHERE gateway_id = '{a}'"),
        "DELETE FROM events".to_string(),
        format!("DELETE FROM events WHERE gateway_id = '{b}'"),
        "TRUNCATE events".to_string(),
        "DROP TABLE events".to_string(),
        "ALTER TABLE events DISABLE ROW LEVEL SECURITY".to_string(),
        "SELECT * FROM events_default".to_string(),
        "SELECT * FROM district_meals".to_string(),
        "CREATE TABLE mine (x int)".to_string(),
        format!("INSERT INTO events (gateway_id, seq, site_id, kind, received_at, body) VALUES ('{b}', 500, 'site-b', 'forged', now(), '{{}}')"),
        format!("INSERT INTO gateways VALUES ('{a}-2', 'site-a', 'postgres', now())"),
    ] {
        let code = refused(&pool_a, &sql).await;
        assert_eq!(code, "42501", "{sql}: SQLSTATE {code}");
    }
    // Nothing changed.
    let after: Vec<(String, i64)> = sqlx::query_as(
        "SELECT gateway_id, count(*) FROM events WHERE kind = 'alarm_press' GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&admin)
    .await
    .unwrap();
    assert_eq!(after, per);

    // A dashboard reads everything and writes nothing.
    let dash = format!("eg_dash_{}", rand::random::<u32>());
    sqlx::query(&format!(
        "CREATE ROLE {dash} LOGIN PASSWORD 'dash' IN ROLE eldergate_dashboard"
    ))
    .execute(&admin)
    .await
    .unwrap();
    d.roles.push(dash.clone());
    let pool_d = PgPool::connect(&url_as(&d.db, &dash, "dash"))
        .await
        .unwrap();
    let all: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool_d)
        .await
        .unwrap();
    assert_eq!(all, 20);
    sqlx::query("SELECT * FROM district_alarm_ack_times")
        .fetch_all(&pool_d)
        .await
        .unwrap();
    for sql in ["DELETE FROM events", "UPDATE events SET kind = 'x'", "INSERT INTO events (gateway_id, seq, site_id, kind, received_at, body) VALUES ('z', 1, 's', 'k', now(), '{}')"] {
        assert_eq!(refused(&pool_d, sql).await, "42501", "{sql}");
    }
    // Running the migration again changes nothing; a second add of the same gateway is refused.
    let out = eldergate(&["central", "migrate"], &d.migrator_url);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again = d.dir.path().join("again.pw");
    let out = eldergate(
        &[
            "central",
            "add-gateway",
            "--gateway-id",
            &a,
            "--site-id",
            "site-a",
            "--password-file",
            again.to_str().unwrap(),
        ],
        &d.migrator_url,
    );
    assert!(!out.status.success());
    assert!(
        !again.exists(),
        "a password file was written for a refused role"
    );
    // An absurd gateway id never reaches SQL.
    let out = eldergate(
        &[
            "central",
            "add-gateway",
            "--gateway-id",
            "x\"; DROP TABLE events; --",
            "--site-id",
            "s",
            "--password-file",
            d.dir.path().join("bad.pw").to_str().unwrap(),
        ],
        &d.migrator_url,
    );
    assert!(!out.status.success());
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&admin)
        .await
        .unwrap();
    assert_eq!(n, 20);
    drop((pool_a, pool_d, admin, store_a, store_b));
    d.drop().await;
}

/// An alert event body as the gateway writes it (the fields the views read).
fn alert(
    kind: &str,
    id: i64,
    raised_at: &str,
    step: u32,
    ladder: u32,
    extra: serde_json::Value,
) -> serde_json::Value {
    let mut v = serde_json::json!({
        "v": 1, "alert_id": id, "kind": kind, "priority": "high", "raised_at": raised_at,
        "step": step, "ladder_steps": ladder, "device_id": "btn-0001", "resident_id": "R00001",
    });
    if let (Some(m), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        m.extend(e.clone());
    }
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn district_views_return_the_right_numbers_for_a_known_data_set() {
    let mut d = District::create().await;
    let TwoGateways {
        a,
        b,
        store_a,
        store_b,
        _dir,
        ..
    } = TwoGateways::add(&mut d).await;
    let ts = |s: &str| s.parse::<jiff::Timestamp>().unwrap();
    let fmt = |t: jiff::Timestamp| t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    let mut seq = 0;
    let mut next = || {
        seq += 1;
        seq
    };
    // Site A, October 2026 (local): five SOS alarms; four acknowledged after 30, 60, 90 and
    // 600 s (one of them closed by staff without an acknowledgement), one never.
    let mut ev = Vec::new();
    for (i, ack_s) in [
        (1, Some(30)),
        (2, Some(60)),
        (3, Some(90)),
        (4, Some(600)),
        (5, None),
    ] {
        let raised = ts(&format!("2026-10-10T0{i}:00:00Z"));
        let r = fmt(raised);
        ev.push(row(
            next(),
            "alert_raised",
            Some("btn-0001"),
            Some(i),
            &r,
            alert("sos", i, &r, 0, 3, serde_json::json!({})),
        ));
        if let Some(s) = ack_s {
            let at = fmt(raised + jiff::SignedDuration::from_secs(s));
            let (kind, extra) = if i == 3 {
                (
                    "alert_resolved",
                    serde_json::json!({"resolved": {"by": "S001", "at": at, "via": "http"}}),
                )
            } else {
                (
                    "alert_acknowledged",
                    serde_json::json!({"acknowledged": {"by": "S001", "at": at, "via": "mqtt"}}),
                )
            };
            ev.push(row(
                next(),
                kind,
                Some("btn-0001"),
                Some(i),
                &at,
                alert("sos", i, &r, 0, 3, extra),
            ));
        }
    }
    // Alarm 2 escalated to step 1 of 3 (not the end), alarm 5 to step 2 of 3 (the end).
    ev.push(row(
        next(),
        "alert_escalated",
        Some("btn-0001"),
        Some(2),
        "2026-10-10T02:00:20.000Z",
        alert(
            "sos",
            2,
            "2026-10-10T02:00:00.000Z",
            1,
            3,
            serde_json::json!({}),
        ),
    ));
    ev.push(row(
        next(),
        "alert_escalated",
        Some("btn-0001"),
        Some(5),
        "2026-10-10T05:03:00.000Z",
        alert(
            "sos",
            5,
            "2026-10-10T05:00:00.000Z",
            2,
            3,
            serde_json::json!({}),
        ),
    ));
    // Another kind of alert is not an alarm: acknowledged at once, not counted.
    ev.push(row(
        next(),
        "alert_raised",
        Some("btn-0002"),
        Some(6),
        "2026-10-10T06:00:00.000Z",
        alert(
            "low_battery",
            6,
            "2026-10-10T06:00:00.000Z",
            0,
            3,
            serde_json::json!({}),
        ),
    ));
    // btn-0001 offline 10 % of October (2 678 400 s): 267 840 s from 2026-10-15 00:00 local.
    ev.push(row(
        next(),
        "alert_raised",
        Some("btn-0001"),
        Some(7),
        "2026-10-14T16:00:00.000Z",
        alert(
            "device_offline",
            7,
            "2026-10-14T16:00:00.000Z",
            0,
            3,
            serde_json::json!({}),
        ),
    ));
    ev.push(row(next(), "alert_resolved", Some("btn-0001"), Some(7), "2026-10-17T18:24:00.000Z", alert("device_offline", 7, "2026-10-14T16:00:00.000Z", 0, 3, serde_json::json!({"resolved": {"by": "gateway", "at": "2026-10-17T18:24:00.000Z", "via": "supervision"}}))));
    // btn-0002 offline across the month's end: 1 h in October, 1 h in November (local).
    ev.push(row(
        next(),
        "alert_raised",
        Some("btn-0002"),
        Some(8),
        "2026-10-31T15:00:00.000Z",
        alert(
            "device_offline",
            8,
            "2026-10-31T15:00:00.000Z",
            0,
            3,
            serde_json::json!({}),
        ),
    ));
    ev.push(row(
        next(),
        "alert_resolved",
        Some("btn-0002"),
        Some(8),
        "2026-10-31T17:00:00.000Z",
        alert(
            "device_offline",
            8,
            "2026-10-31T15:00:00.000Z",
            0,
            3,
            serde_json::json!({}),
        ),
    ));
    store_a
        .insert(&a, "site-a", &Epochs::default(), &ev)
        .await
        .unwrap();

    // Site B: three meals in October (one voided later), one in November.
    let meal = |id: i64, date: &str| {
        serde_json::json!({
            "meal_id": id, "resident_id": "R00002", "card_id": "CA000002", "local_date": date,
            "period": "lunch", "price_fen": 1500, "subsidy_fen": 150, "payable_fen": 1350,
        })
    };
    let ev_b = vec![
        row(
            1,
            "meal_settled",
            Some("rdr-01"),
            None,
            "2026-10-08T04:00:00.000Z",
            meal(1, "2026-10-08"),
        ),
        row(
            2,
            "meal_settled",
            Some("rdr-01"),
            None,
            "2026-10-09T04:00:00.000Z",
            meal(2, "2026-10-09"),
        ),
        row(
            3,
            "meal_settled",
            Some("rdr-01"),
            None,
            "2026-10-10T04:00:00.000Z",
            meal(3, "2026-10-10"),
        ),
        row(
            4,
            "meal_voided",
            None,
            None,
            "2026-10-10T05:00:00.000Z",
            serde_json::json!({"meal_id": 3, "resident_id": "R00002", "refund_fen": 1350, "by": "S012", "reason": "wrong card"}),
        ),
        // Local date 1 November, still 31 October in UTC.
        row(
            5,
            "meal_settled",
            Some("rdr-01"),
            None,
            "2026-10-31T17:00:00.000Z",
            meal(4, "2026-11-01"),
        ),
    ];
    store_b
        .insert(&b, "site-b", &Epochs::default(), &ev_b)
        .await
        .unwrap();

    // Read as a dashboard would.
    let admin = d.admin().await;
    let dash = format!("eg_dash_{}", rand::random::<u32>());
    sqlx::query(&format!(
        "CREATE ROLE {dash} LOGIN PASSWORD 'dash' IN ROLE eldergate_dashboard"
    ))
    .execute(&admin)
    .await
    .unwrap();
    d.roles.push(dash.clone());
    let pool = PgPool::connect(&url_as(&d.db, &dash, "dash"))
        .await
        .unwrap();

    let acks: Vec<(String, String, i64, i64, f64, f64)> = sqlx::query_as(
        "SELECT community, month::text, alarms, acknowledged, ack_p50_s, ack_p90_s FROM district_alarm_ack_times ORDER BY 1, 2",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    // p50 of 30, 60, 90, 600 = 75; p90 = 90 + 0.7 × 510 = 447 (linear interpolation).
    assert_eq!(acks.len(), 1, "{acks:?}");
    let (c, m, alarms, acked, p50, p90) = &acks[0];
    assert_eq!(
        (c.as_str(), m.as_str(), *alarms, *acked),
        ("site-a", "2026-10-01", 5, 4)
    );
    assert!(
        (p50 - 75.0).abs() < 1e-6 && (p90 - 447.0).abs() < 1e-6,
        "p50 {p50}, p90 {p90}"
    );

    let ends = sqlx::query(
        "SELECT community, alert_id, step, closed_at IS NULL FROM district_alarms_ladder_end",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let ends: Vec<(String, i64, i32, bool)> = ends
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(ends, vec![("site-a".to_string(), 5, 2, true)]);

    let meals: Vec<(String, String, i64, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT community, month::text, meals, price_fen, subsidy_fen, payable_fen, voided_meals FROM district_meals ORDER BY 1, 2",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        meals,
        vec![
            ("site-b".into(), "2026-10-01".into(), 2, 3000, 300, 2700, 1),
            ("site-b".into(), "2026-11-01".into(), 1, 1500, 150, 1350, 0),
        ]
    );

    let avail: Vec<(String, String, f64, f64)> = sqlx::query_as(
        "SELECT device_id, month::text, offline_s::float8, availability::float8 FROM district_device_availability
         WHERE community = 'site-a' AND month IN ('2026-10-01', '2026-11-01') ORDER BY 1, 2",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let nov_s = 30.0 * 86400.0;
    let oct_s = 31.0 * 86400.0;
    let want = [
        ("btn-0001", "2026-10-01", 267_840.0, 0.9),
        ("btn-0002", "2026-10-01", 3600.0, 1.0 - 3600.0 / oct_s),
        ("btn-0002", "2026-11-01", 3600.0, 1.0 - 3600.0 / nov_s),
    ];
    assert_eq!(avail.len(), want.len(), "{avail:?}");
    for (got, want) in avail.iter().zip(want) {
        assert_eq!((got.0.as_str(), got.1.as_str()), (want.0, want.1));
        assert!(
            (got.2 - want.2).abs() < 1e-6 && (got.3 - want.3).abs() < 1e-9,
            "{got:?} vs {want:?}"
        );
    }
    drop((pool, admin, store_a, store_b));
    d.drop().await;
}
