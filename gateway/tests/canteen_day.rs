//! The canteen manager's day on the real journal writer (a temporary SQLite file), with taps at
//! chosen instants: a night period across midnight counts on the evening's date, the day close
//! adds up cash by method, payouts, voids and refusals per reader and flags what a person should
//! look at (two readers minutes apart, far more meals than usual, a card used while its resident
//! is in hospital), the quarterly claim lists voided meals apart, and a ledger whose sums leave
//! 64 bits is an error, never a panic or a wrapped number.

mod common;

use eldergate::canteen::claim::{claim_csv, ClaimPeriod};
use eldergate::canteen::dayclose::close;
use eldergate::canteen::rules::RuleSet;
use eldergate::canteen::statement::statement;
use eldergate::canteen::{CanteenAdmin, CanteenOp, CardTap, SeedCards, TopUp};
use eldergate::config::StaffConfig;
use eldergate::journal::{self, Failure, Journal};
use eldergate::registry::Registry;
use eldergate_protocol::payload::{Down, Tap, TapResult};
use jiff::Timestamp;
use sqlx::Row;
use std::sync::Arc;
use std::time::Duration;

const RULES: &str = r#"
name = "night canteen"
version = "2026.1"
[[periods]]
name = "day"
start = "06:00"
end = "22:00"
price_fen = 1500
[[periods]]
name = "late"
start = "22:00"
end = "02:00"
price_fen = 900
[[subsidies]]
name = "80+"
min_age = 80
amount = { fixed_fen = 300 }
"#;

fn registry() -> Registry {
    let mut r = Registry::empty("s");
    r.residents = common::three_residents();
    for (id, role) in [("S1", "canteen_operator"), ("S2", "grid_worker")] {
        r.staff.insert(
            id.into(),
            StaffConfig {
                id: id.into(),
                name: id.into(),
                role: role.into(),
                grid: None,
                phone: None,
            },
        );
    }
    r.canteen = Some((RuleSet::parse(RULES).unwrap(), 0));
    r
}

struct Day {
    journal: Journal,
    registry: Arc<Registry>,
    seq: u32,
    _dir: tempfile::TempDir,
}

impl Day {
    async fn start() -> Day {
        let dir = tempfile::tempdir().unwrap();
        let (journal, mut writer) = journal::open(dir.path(), 256, Duration::from_secs(3600))
            .await
            .unwrap();
        let registry = Arc::new(registry());
        writer.provide(registry.clone());
        tokio::spawn(writer.run());
        journal.run(SeedCards).await.unwrap();
        Day {
            journal,
            registry,
            seq: 0,
            _dir: dir,
        }
    }

    async fn tap_at(&mut self, reader: &str, i: usize, at: &str) -> Down {
        self.seq += 1;
        self.journal
            .run(CardTap {
                reader: reader.into(),
                tap: Tap {
                    v: 1,
                    seq: self.seq,
                    card: format!("C000000{i}"),
                    price_fen: None,
                    delivered_by: None,
                    ts: None,
                    mac: None,
                },
                received_at: at.parse::<Timestamp>().unwrap(),
            })
            .await
            .unwrap()
    }

    async fn topup(&self, i: usize, fen: i64, method: &str) -> Result<i64, Failure> {
        self.journal
            .run(TopUp {
                resident: format!("R{i}"),
                amount_fen: fen,
                by: "S1".into(),
                reason: None,
                method: Some(method.into()),
            })
            .await
    }

    async fn admin(&self, op: CanteenOp, by: &str) -> Result<serde_json::Value, Failure> {
        self.journal.run(CanteenAdmin { op, by: by.into() }).await
    }

    async fn meal_of_seq(&self, seq: u32) -> (String, String) {
        let r = sqlx::query(
            "SELECT m.local_date, m.period FROM taps t JOIN meals m ON m.id = t.meal_id WHERE t.reader_seq = ?",
        )
        .bind(i64::from(seq))
        .fetch_one(self.journal.readers())
        .await
        .unwrap();
        (r.get(0), r.get(1))
    }
}

fn paid(d: &Down) -> bool {
    matches!(
        d,
        Down::Display {
            result: TapResult::Paid,
            ..
        }
    )
}

#[tokio::test]
async fn a_night_meal_after_midnight_counts_on_the_evening_it_started() {
    let mut d = Day::start().await;
    d.topup(0, 10_000, "cash").await.unwrap();
    // 01:30 in Shanghai on 3 March is 17:30 UTC on 2 March: the "late" meal of 2 March.
    assert!(paid(&d.tap_at("rdr-1", 0, "2026-03-02T17:30:00Z").await));
    assert_eq!(d.meal_of_seq(1).await, ("2026-03-02".into(), "late".into()));
    // 23:59 and 00:00 local: the same night's meal date.
    assert!(paid(
        &d.tap_at("rdr-1", 1 - 1, "2026-03-02T15:59:00Z").await
    ));
    assert_eq!(d.meal_of_seq(2).await, ("2026-03-02".into(), "late".into()));
    // 02:00 local: no period; 06:00: the day period of the 3rd.
    let out = d.tap_at("rdr-1", 0, "2026-03-02T18:00:00Z").await;
    assert!(matches!(
        out,
        Down::Display {
            result: TapResult::OutsideMealPeriod,
            ..
        }
    ));
    assert!(paid(&d.tap_at("rdr-1", 0, "2026-03-02T22:00:00Z").await));
    assert_eq!(d.meal_of_seq(4).await, ("2026-03-03".into(), "day".into()));
}

#[tokio::test]
async fn the_day_close_adds_up_cash_voids_refusals_and_flags_what_to_look_at() {
    let mut d = Day::start().await;
    let now = Timestamp::now();
    let today = now
        .to_zoned(jiff::tz::TimeZone::get("Asia/Shanghai").unwrap())
        .date();
    // Money of the day: top-ups by method, a payout, a void.
    d.topup(0, 10_000, "cash").await.unwrap();
    d.topup(1, 20_000, "wechat").await.unwrap();
    d.topup(2, 2_000, "cash").await.unwrap();
    let bad = d.topup(2, 2_000, "bitcoin").await;
    assert!(matches!(bad, Err(Failure::Refused(r)) if r.reason == "bad_method"));
    // A grid worker may report a resident away, but may not pay out.
    let forbidden = d
        .admin(
            CanteenOp::PayOut {
                resident: "R2".into(),
                amount_fen: Some(500),
                reason: "moved".into(),
            },
            "S2",
        )
        .await;
    assert!(
        matches!(&forbidden, Err(Failure::Refused(r)) if r.kind == eldergate::journal::RefusalKind::Forbidden),
        "{forbidden:?}"
    );
    d.admin(
        CanteenOp::PayOut {
            resident: "R2".into(),
            amount_fen: Some(500),
            reason: "receipt 17".into(),
        },
        "S1",
    )
    .await
    .unwrap();

    // Meals at chosen local times of today (meal periods 06:00–22:00 and 22:00–02:00).
    let at = |h: i8, m: i8| {
        today
            .at(h, m, 0, 0)
            .to_zoned(jiff::tz::TimeZone::get("Asia/Shanghai").unwrap())
            .unwrap()
            .timestamp()
            .to_string()
    };
    // R0's card at two readers two minutes apart.
    assert!(paid(&d.tap_at("rdr-1", 0, &at(11, 0)).await));
    assert!(paid(&d.tap_at("rdr-2", 0, &at(11, 2)).await));
    // R1: one meal a day for a week, then five today.
    for back in 1..=7 {
        let day = today.checked_sub(jiff::Span::new().days(back)).unwrap();
        let t = day
            .at(12, 0, 0, 0)
            .to_zoned(jiff::tz::TimeZone::get("Asia/Shanghai").unwrap())
            .unwrap()
            .timestamp()
            .to_string();
        assert!(paid(&d.tap_at("rdr-1", 1, &t).await));
    }
    for h in [7, 9, 12, 15, 18] {
        assert!(paid(&d.tap_at("rdr-1", 1, &at(h, 0)).await));
    }
    // R2 is in hospital (reported now): a tap after that is flagged, not refused.
    d.admin(
        CanteenOp::Away {
            resident: "R2".into(),
            kind: "hospital".into(),
            note: Some("人民医院 3F".into()),
        },
        "S2",
    )
    .await
    .unwrap();
    let again = d
        .admin(
            CanteenOp::Away {
                resident: "R2".into(),
                kind: "away".into(),
                note: None,
            },
            "S2",
        )
        .await;
    assert!(matches!(again, Err(Failure::Refused(r)) if r.reason == "already_away"));
    // Now, or at 06:30 between 00:00 and 06:00: after the report either way. (From 00:00 to
    // 02:00 "now" is in the late period, which counts on the evening before: not today's close;
    // from 02:00 to 06:00 no meal is served.)
    let local = now.to_zoned(jiff::tz::TimeZone::get("Asia/Shanghai").unwrap());
    let when = if (0..6).contains(&local.hour()) {
        at(6, 30)
    } else {
        Timestamp::now().to_string()
    };
    let in_hospital = d.tap_at("rdr-1", 2, &when).await;
    assert!(
        paid(&in_hospital),
        "flagged, never refused: {in_hospital:?}"
    );
    // A void of R0's second meal refunds exactly what it charged.
    let meal: i64 = sqlx::query("SELECT MAX(id) FROM meals WHERE resident_id = 'R0'")
        .fetch_one(d.journal.readers())
        .await
        .unwrap()
        .get(0);
    let v = d
        .admin(
            CanteenOp::VoidMeal {
                meal,
                reason: "served twice".into(),
            },
            "S1",
        )
        .await
        .unwrap();
    assert_eq!(v["refund_fen"], 1500);
    // An unknown card at rdr-2: a refusal by result.
    d.seq += 1;
    d.journal
        .run(CardTap {
            reader: "rdr-2".into(),
            tap: Tap {
                v: 1,
                seq: d.seq,
                card: "FFFFFFFF".into(),
                price_fen: None,
                delivered_by: None,
                ts: None,
                mac: None,
            },
            received_at: now,
        })
        .await
        .unwrap();

    let day = close(d.journal.readers(), &d.registry, today)
        .await
        .unwrap();
    let j = serde_json::to_value(&day).unwrap();
    assert_eq!(j["topups_by_method"]["cash"]["amount_fen"], 12_000, "{j:#}");
    assert_eq!(j["topups_by_method"]["cash"]["count"], 2);
    assert_eq!(j["topups_by_method"]["wechat"]["amount_fen"], 20_000);
    assert_eq!(j["payouts"]["amount_fen"], 500);
    assert_eq!(j["cash_drawer_fen"], 11_500, "cash in − cash paid out");
    assert_eq!(j["refunds"]["amount_fen"], 1_500);
    assert_eq!(j["voids"][0]["meal_id"], meal);
    assert_eq!(j["voids"][0]["refund_fen"], 1_500);
    assert_eq!(j["refusals"]["result:unknown_card"], 1);
    assert_eq!(j["readers"]["rdr-2"]["taps"]["unknown_card"], 1);
    let kinds: Vec<&str> = day.flags.iter().map(|f| f.kind.as_str()).collect();
    assert!(kinds.contains(&"unusual_frequency"), "{j:#}");
    assert!(kinds.contains(&"hospital"), "{j:#}");
    // The two-reader pair was voided in part: only live meals are flagged.
    assert!(!kinds.contains(&"two_readers"), "{j:#}");
    let hospital = day.flags.iter().find(|f| f.kind == "hospital").unwrap();
    assert_eq!(hospital.resident_id, "R2");
    assert!(hospital.detail.contains("人民医院"));
    let unusual = day
        .flags
        .iter()
        .find(|f| f.kind == "unusual_frequency")
        .unwrap();
    assert_eq!(
        (unusual.resident_id.as_str(), unusual.meal_ids.len()),
        ("R1", 5)
    );
    let ids: Vec<i64> =
        sqlx::query("SELECT id FROM meals WHERE resident_id = 'R1' AND local_date = ? ORDER BY id")
            .bind(today.to_string())
            .fetch_all(d.journal.readers())
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
    assert_eq!(unusual.meal_ids, ids);

    // Before the void, the same card at two readers two minutes apart was a flag: tap again.
    assert!(paid(&d.tap_at("rdr-2", 0, &at(11, 3)).await));
    let day = close(d.journal.readers(), &d.registry, today)
        .await
        .unwrap();
    let two = day.flags.iter().find(|f| f.kind == "two_readers").unwrap();
    assert_eq!(two.card_id, "C0000000");

    // Back from hospital: later taps are not flagged; a second "back" is a conflict.
    d.admin(
        CanteenOp::Back {
            resident: "R2".into(),
        },
        "S1",
    )
    .await
    .unwrap();
    let twice = d
        .admin(
            CanteenOp::Back {
                resident: "R2".into(),
            },
            "S1",
        )
        .await;
    assert!(matches!(twice, Err(Failure::Refused(r)) if r.reason == "not_away"));

    // The statement: every ledger row with its running balance, ending at Σ ledger.
    let s = statement(d.journal.readers(), &d.registry, "R0", 500)
        .await
        .unwrap()
        .unwrap();
    let kinds: Vec<&str> = s.lines.iter().map(|l| l.kind.as_str()).collect();
    assert_eq!(kinds, ["topup", "charge", "charge", "refund", "charge"]);
    assert_eq!(s.lines.last().unwrap().balance_fen, s.balance_fen);
    // One subsidized meal per period (¥3 off for 80+); the voided one was charged in full.
    assert_eq!(s.balance_fen, 10_000 - 1200 - 1500 + 1500 - 1500);
    assert_eq!(s.lines[0].method.as_deref(), Some("cash"));

    // The quarter's claim: the voided meal is listed apart and counted in no subtotal. (The
    // residents are 80+, so every meal is subsidized.)
    d.admin(
        CanteenOp::VoidMeal {
            meal: ids[0],
            reason: "served twice".into(),
        },
        "S1",
    )
    .await
    .unwrap();
    let q = (today.month() - 1) / 3 + 1;
    let period = ClaimPeriod::parse(&format!("{}-Q{q}", today.year())).unwrap();
    let csv = String::from_utf8(
        claim_csv(d.journal.readers(), &d.registry, &period)
            .await
            .unwrap(),
    )
    .unwrap();
    let first = csv.lines().next().unwrap();
    assert!(
        first.contains("night canteen") && first.contains("2026.1"),
        "{first}"
    );
    assert!(first.contains(&d.registry.canteen.as_ref().unwrap().0.sha256));
    let voided: Vec<&str> = csv.lines().filter(|l| l.starts_with("已作废")).collect();
    assert_eq!(voided.len(), 1, "{csv}");
    assert!(voided[0].contains("S1,served twice"), "{csv}");
    let detail = csv.lines().filter(|l| l.starts_with("明细")).count();
    let total = csv.lines().find(|l| l.starts_with("合计")).unwrap();
    assert!(total.contains(&format!(",{detail},")), "{total}");
}

#[tokio::test]
async fn a_ledger_whose_sums_leave_64_bits_is_an_error_never_a_panic() {
    let mut d = Day::start().await;
    d.topup(0, 1_000, "cash").await.unwrap();
    // Rows no top-up could write (a restored or edited journal): their sum leaves i64.
    let file = d._dir.path().join("journal.db");
    let raw = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(sqlx::sqlite::SqliteConnectOptions::new().filename(&file))
        .await
        .unwrap();
    for _ in 0..3 {
        sqlx::query("INSERT INTO ledger (resident_id, kind, amount_fen, staff_id, at) VALUES ('R0', 'topup', ?, 'S1', '2026-01-01T00:00:00.000Z')")
            .bind(i64::MAX / 2)
            .execute(&raw)
            .await
            .unwrap();
    }
    drop(raw);
    // A tap and a top-up of that resident fail alone (no answer from a corrupt sum) …
    d.seq += 1;
    let tap = d
        .journal
        .run(CardTap {
            reader: "rdr-1".into(),
            tap: Tap {
                v: 1,
                seq: d.seq,
                card: "C0000000".into(),
                price_fen: None,
                delivered_by: None,
                ts: None,
                mac: None,
            },
            received_at: "2026-03-02T04:00:00Z".parse().unwrap(),
        })
        .await;
    assert!(matches!(tap, Err(Failure::Broken(_))), "{tap:?}");
    let top = d.topup(0, 1, "cash").await;
    assert!(matches!(top, Err(Failure::Broken(_))), "{top:?}");
    // … the reports say so …
    assert!(statement(d.journal.readers(), &d.registry, "R0", 10)
        .await
        .is_err());
    let day: jiff::civil::Date = "2026-01-01".parse().unwrap();
    assert!(close(d.journal.readers(), &d.registry, day).await.is_err());
    // … and everyone else is served.
    d.topup(1, 2_000, "cash").await.unwrap();
    assert!(paid(&d.tap_at("rdr-1", 1, "2026-03-02T04:00:00Z").await));
}
