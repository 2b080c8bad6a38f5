//! Property test of the canteen ledger, driving the real journal writer on a temporary SQLite
//! file: no sequence of taps, retransmissions, double taps, top-ups, voids and payouts breaks the
//! balance invariant or charges a meal twice; absurd prices and amounts are refused (never a
//! journal failure, never a panic), and a tap's answer shows the balance as it is after it (a
//! re-tap after a void is a new meal, not a replay). A seq reused for another card is refused as a
//! conflict and changes nothing; staff whose role may not move money are refused (403); a tap with
//! a forged card MAC is refused and charges nothing; a refund never exceeds what was charged.

mod common;

use eldergate::canteen::mac::{to_hex, SiteSecret};
use eldergate::canteen::rules::RuleSet;
use eldergate::canteen::{CanteenAdmin, CanteenOp, CardTap, SeedCards, TopUp};
use eldergate::config::StaffConfig;
use eldergate::journal;
use eldergate::registry::Registry;
use eldergate_protocol::payload::{Down, Tap, TapResult};
use proptest::prelude::*;
use sqlx::Row;
use std::sync::Arc;
use std::time::Duration;

const RULES: &str = r#"
name = "p"
[[periods]]
name = "all_day"
start = "00:00"
end = "23:59:59"
price_fen = 1500
[[subsidies]]
name = "60+ 10%"
min_age = 60
amount = { percent = 10 }
"#;

#[derive(Debug, Clone)]
enum Op {
    /// A new tap of resident i's card, with a price typed at the counter (or the menu price).
    Tap(usize, Option<i64>),
    /// The reader retransmits its k-th most recent tap.
    Retransmit(usize),
    /// Top up resident i.
    TopUp(usize, i64),
    /// Void the k-th meal.
    Void(usize),
    /// Pay resident i's balance out: Some(fen) or None for all of it.
    PayOut(usize, Option<i64>),
    /// The reader sends its k-th most recent seq again, with resident j's card.
    ReuseSeq(usize, usize),
    /// Void resident i's latest meal, then tap their card again at once.
    VoidThenRetap(usize),
    /// A grid worker (no money role) tries to top up resident i.
    TopUpByGridWorker(usize),
    /// A tap of resident i's card with a forged MAC (Some) or a genuine one (None).
    MacTap(usize, Option<String>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => ((0usize..3), price()).prop_map(|(i, p)| Op::Tap(i, p)),
        2 => (0usize..5).prop_map(Op::Retransmit),
        2 => ((0usize..3), amount()).prop_map(|(i, a)| Op::TopUp(i, a)),
        1 => (0usize..5).prop_map(Op::Void),
        1 => ((0usize..3), proptest::option::of(1i64..4000)).prop_map(|(i, a)| Op::PayOut(i, a)),
        1 => ((0usize..5), (0usize..3)).prop_map(|(k, j)| Op::ReuseSeq(k, j)),
        1 => (0usize..3).prop_map(Op::VoidThenRetap),
        1 => (0usize..3).prop_map(Op::TopUpByGridWorker),
        1 => ((0usize..3), proptest::option::of("[0-9A-Fa-f]{0,20}")).prop_map(|(i, m)| Op::MacTap(i, m)),
    ]
}

/// Mostly the menu price; sometimes a typed one, plausible or absurd.
fn price() -> impl Strategy<Value = Option<i64>> {
    prop_oneof![
        6 => Just(None),
        2 => (1i64..3000).prop_map(Some),
        1 => prop_oneof![
            Just(0i64), Just(-1), Just(i64::MIN), Just(1 << 62), Just(i64::MAX), Just(100_001)
        ].prop_map(Some),
    ]
}

/// Mostly plausible top-ups; sometimes absurd ones.
fn amount() -> impl Strategy<Value = i64> {
    prop_oneof![
        6 => 1i64..5000,
        1 => prop_oneof![
            Just(0i64), Just(-1), Just(i64::MIN), Just(1_000_000_000_000_000), Just(i64::MAX), Just(1_000_001)
        ],
    ]
}

fn registry(double_tap_s: u64) -> Registry {
    let mut r = Registry::empty("s");
    r.residents = common::three_residents();
    r.staff.insert(
        "S1".into(),
        StaffConfig {
            id: "S1".into(),
            name: "op".into(),
            role: "canteen_operator".into(),
            grid: None,
            phone: None,
        },
    );
    r.staff.insert(
        "S2".into(),
        StaffConfig {
            id: "S2".into(),
            name: "grid".into(),
            role: "grid_worker".into(),
            grid: None,
            phone: None,
        },
    );
    r.canteen = Some((RuleSet::parse(RULES).unwrap(), double_tap_s));
    r.card_mac = Some(secret());
    r
}

fn secret() -> SiteSecret {
    SiteSecret::new(b"a site secret of the test".to_vec()).unwrap()
}

async fn tap(journal: &journal::Journal, seq: u32, i: usize, mac: Option<String>) -> Down {
    journal
        .run(CardTap {
            reader: "rdr".into(),
            tap: Tap {
                v: 1,
                seq,
                card: format!("C000000{i}"),
                price_fen: None,
                delivered_by: None,
                ts: None,
                mac,
            },
            received_at: jiff::Timestamp::now(),
        })
        .await
        .unwrap()
}

async fn run(ops: Vec<Op>, double_tap_s: u64) {
    let dir = tempfile::tempdir().unwrap();
    let (journal, mut writer) = journal::open(dir.path(), 256, Duration::from_secs(3600))
        .await
        .unwrap();
    writer.provide(Arc::new(registry(double_tap_s)));
    let writer = tokio::spawn(writer.run());
    journal.run(SeedCards).await.unwrap();
    let mut seq = 0u32;
    let mut sent: Vec<(u32, usize, Option<i64>)> = Vec::new();
    let mut answers: std::collections::HashMap<u32, Down> = Default::default();
    for op in ops {
        match op {
            Op::Tap(i, _) | Op::Retransmit(i) if matches!(op, Op::Tap(..)) || sent.is_empty() => {
                let price_fen = match op {
                    Op::Tap(_, p) => p,
                    _ => None,
                };
                seq += 1;
                sent.push((seq, i, price_fen));
                let tap = Tap {
                    v: 1,
                    seq,
                    card: format!("c000000{i}"),
                    price_fen,
                    delivered_by: None,
                    ts: None,
                    mac: None,
                };
                let d = journal
                    .run(CardTap {
                        reader: "rdr".into(),
                        tap,
                        received_at: jiff::Timestamp::now(),
                    })
                    .await
                    .unwrap();
                let now = balance_of(&journal, i).await;
                match &d {
                    Down::Display {
                        result: TapResult::Paid,
                        balance_fen,
                        ..
                    } => assert_eq!(*balance_fen, now, "a paid answer shows today's balance"),
                    Down::Display {
                        result: TapResult::Refused,
                        balance_fen,
                        ..
                    } => {
                        assert!(price_fen.is_some_and(|p| !(1..=100_000).contains(&p)));
                        assert_eq!(*balance_fen, now, "a refusal shows today's balance");
                    }
                    _ => {}
                }
                answers.insert(seq, d);
            }
            Op::Retransmit(k) => {
                let (s, i, price_fen) = sent[sent.len() - 1 - (k % sent.len())];
                let tap = Tap {
                    v: 1,
                    seq: s,
                    card: format!("C000000{i}"),
                    price_fen,
                    delivered_by: None,
                    ts: None,
                    mac: None,
                };
                let d = journal
                    .run(CardTap {
                        reader: "rdr".into(),
                        tap,
                        received_at: jiff::Timestamp::now(),
                    })
                    .await
                    .unwrap();
                assert_eq!(
                    Some(&d),
                    answers.get(&s),
                    "a retransmission gets the same answer"
                );
            }
            Op::TopUp(i, a) => {
                let before = balance_of(&journal, i).await;
                let r = journal
                    .run(TopUp {
                        resident: format!("R{i}"),
                        amount_fen: a,
                        by: "S1".into(),
                        reason: None,
                        method: None,
                    })
                    .await;
                match r {
                    Ok(b) => {
                        assert!((1..=1_000_000).contains(&a), "{a} accepted");
                        assert_eq!(b, before + a);
                    }
                    Err(eldergate::journal::Failure::Refused(_)) => {
                        assert!(!(1..=1_000_000).contains(&a), "{a} refused")
                    }
                    Err(e) => panic!("the journal failed on a top-up of {a}: {e}"),
                }
            }
            Op::Void(k) => {
                let _ = journal
                    .run(CanteenAdmin {
                        op: CanteenOp::VoidMeal {
                            meal: i64::try_from(k).unwrap() + 1,
                            reason: "test".into(),
                        },
                        by: "S1".into(),
                    })
                    .await;
            }
            Op::PayOut(i, amount_fen) => {
                let before = balance_of(&journal, i).await;
                let r = journal
                    .run(CanteenAdmin {
                        op: CanteenOp::PayOut {
                            resident: format!("R{i}"),
                            amount_fen,
                            reason: "test".into(),
                        },
                        by: "S1".into(),
                    })
                    .await;
                if let Err(eldergate::journal::Failure::Journal(e)) = &r {
                    panic!("the journal failed: {e}");
                }
                let wanted = amount_fen.unwrap_or(before);
                assert_eq!(
                    r.is_ok(),
                    wanted > 0 && wanted <= before,
                    "a payout happens exactly when the balance covers it: {r:?}"
                );
            }
            Op::ReuseSeq(k, j) if !sent.is_empty() => {
                let (s, i, _) = sent[sent.len() - 1 - (k % sent.len())];
                if i == j {
                    continue;
                }
                let before = (balance_of(&journal, i).await, balance_of(&journal, j).await);
                let r = journal
                    .run(CardTap {
                        reader: "rdr".into(),
                        tap: Tap {
                            v: 1,
                            seq: s,
                            card: format!("C000000{j}"),
                            price_fen: None,
                            delivered_by: None,
                            ts: None,
                            mac: None,
                        },
                        received_at: jiff::Timestamp::now(),
                    })
                    .await;
                match r {
                    Err(eldergate::journal::Failure::Refused(r)) => {
                        assert_eq!(r.reason, "seq_conflict")
                    }
                    other => panic!("a seq reused for another card was answered {other:?}"),
                }
                let after = (balance_of(&journal, i).await, balance_of(&journal, j).await);
                assert_eq!(before, after, "a seq conflict moves no money");
            }
            Op::ReuseSeq(..) => {}
            Op::VoidThenRetap(i) => {
                let meal: Option<i64> = sqlx::query(
                    "SELECT MAX(id) FROM meals WHERE resident_id = ? AND voided_by IS NULL",
                )
                .bind(format!("R{i}"))
                .fetch_one(journal.readers())
                .await
                .unwrap()
                .get(0);
                let Some(meal) = meal else { continue };
                journal
                    .run(CanteenAdmin {
                        op: CanteenOp::VoidMeal {
                            meal,
                            reason: "wrong card".into(),
                        },
                        by: "S1".into(),
                    })
                    .await
                    .expect("an operator voids a meal");
                let before = balance_of(&journal, i).await;
                let meals_before = meals_of(&journal, i).await;
                seq += 1;
                sent.push((seq, i, None));
                let d = tap(&journal, seq, i, None).await;
                if let Down::Display {
                    result: TapResult::Paid,
                    payable_fen,
                    balance_fen,
                    ..
                } = &d
                {
                    assert_eq!(
                        meals_of(&journal, i).await,
                        meals_before + 1,
                        "a re-tap after a void is a new meal"
                    );
                    assert_eq!(*balance_fen, before - payable_fen, "and it is charged");
                }
                answers.insert(seq, d);
            }
            Op::TopUpByGridWorker(i) => {
                let r = journal
                    .run(TopUp {
                        resident: format!("R{i}"),
                        amount_fen: 100,
                        by: "S2".into(),
                        reason: None,
                        method: Some("cash".into()),
                    })
                    .await;
                match r {
                    Err(eldergate::journal::Failure::Refused(r)) => {
                        assert_eq!(r.kind, eldergate::journal::RefusalKind::Forbidden)
                    }
                    other => panic!("a grid worker's top-up was answered {other:?}"),
                }
            }
            Op::MacTap(i, forged) => {
                seq += 1;
                sent.push((seq, i, None));
                let genuine = to_hex(&secret().tap_mac("rdr", seq, &format!("C000000{i}")));
                let forged = forged.filter(|f| !f.is_empty() && !f.eq_ignore_ascii_case(&genuine));
                let before = balance_of(&journal, i).await;
                let d = tap(&journal, seq, i, Some(forged.clone().unwrap_or(genuine))).await;
                let Down::Display { result, name, .. } = &d else {
                    panic!("{d:?}")
                };
                if forged.is_some() {
                    assert_eq!(*result, TapResult::Refused, "a forged MAC is refused");
                    assert_eq!(*name, None, "and shows nobody's name");
                    assert_eq!(balance_of(&journal, i).await, before, "and charges nothing");
                } else {
                    assert_ne!(*result, TapResult::Refused, "a genuine MAC settles");
                }
                answers.insert(seq, d);
            }
            Op::Tap(..) => unreachable!(),
        }
    }
    let db = journal.readers().clone();
    // Every meal is charged at most once and refunded at most once.
    let bad: i64 = sqlx::query(
        "SELECT COUNT(*) FROM (SELECT meal_id, kind, COUNT(*) n FROM ledger WHERE meal_id IS NOT NULL GROUP BY 1, 2 HAVING n > 1)",
    )
    .fetch_one(&db)
    .await
    .unwrap()
    .get(0);
    assert_eq!(bad, 0, "a meal was charged or refunded twice");
    let over: i64 = sqlx::query(
        "SELECT COUNT(*) FROM (SELECT meal_id, SUM(amount_fen) s FROM ledger WHERE meal_id IS NOT NULL GROUP BY 1 HAVING s > 0)",
    )
    .fetch_one(&db)
    .await
    .unwrap()
    .get(0);
    assert_eq!(over, 0, "a refund exceeded what its meal was charged");
    for i in 0..3 {
        let r = format!("R{i}");
        let (balance, topups, charges, refunds, payouts): (i64, i64, i64, i64, i64) = {
            let row = sqlx::query(
                "SELECT COALESCE(SUM(amount_fen),0),
                        COALESCE(SUM(CASE WHEN kind='topup' THEN amount_fen END),0),
                        COALESCE(SUM(CASE WHEN kind='charge' THEN amount_fen END),0),
                        COALESCE(SUM(CASE WHEN kind='refund' THEN amount_fen END),0),
                        COALESCE(SUM(CASE WHEN kind='payout' THEN amount_fen END),0)
                 FROM ledger WHERE resident_id = ?",
            )
            .bind(&r)
            .fetch_one(&db)
            .await
            .unwrap();
            (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4))
        };
        assert!(balance >= 0, "{r}: balance went negative: {balance}");
        assert!(payouts <= 0, "{r}: payouts take money out");
        assert_eq!(balance, topups + charges + refunds + payouts);
        // Charges equal the payable of the resident's meals; refunds those of voided meals.
        let (payable, voided): (i64, i64) = {
            let row = sqlx::query(
                "SELECT COALESCE(SUM(payable_fen),0), COALESCE(SUM(CASE WHEN voided_by IS NOT NULL THEN payable_fen END),0) FROM meals WHERE resident_id = ?",
            )
            .bind(&r)
            .fetch_one(&db)
            .await
            .unwrap();
            (row.get(0), row.get(1))
        };
        assert_eq!(-charges, payable, "{r}: charges match meals");
        assert_eq!(refunds, voided, "{r}: refunds match voided meals");
        // The last paid answer shows the balance the ledger had at that moment (never more).
        for d in answers.values() {
            if let Down::Display {
                result: TapResult::Paid,
                balance_fen,
                ..
            } = d
            {
                assert!(*balance_fen >= 0);
            }
        }
    }
    drop(journal);
    let _ = writer.await;
}

async fn meals_of(journal: &journal::Journal, i: usize) -> i64 {
    sqlx::query("SELECT COUNT(*) FROM meals WHERE resident_id = ?")
        .bind(format!("R{i}"))
        .fetch_one(journal.readers())
        .await
        .unwrap()
        .get(0)
}

async fn balance_of(journal: &journal::Journal, i: usize) -> i64 {
    sqlx::query("SELECT COALESCE(SUM(amount_fen), 0) FROM ledger WHERE resident_id = ?")
        .bind(format!("R{i}"))
        .fetch_one(journal.readers())
        .await
        .unwrap()
        .get(0)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn no_sequence_breaks_the_balance_or_charges_twice(ops in proptest::collection::vec(op(), 1..40), window in prop_oneof![Just(0u64), Just(3600u64)]) {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(run(ops, window));
    }
}
