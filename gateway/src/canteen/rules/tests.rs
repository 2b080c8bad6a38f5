use super::*;
use jiff::civil::{date, time};

fn load(name: &str) -> RuleSet {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/canteen")
        .join(name);
    RuleSet::load(&p).unwrap()
}

fn who(birth: Date, statuses: &[&str]) -> ResidentFacts {
    ResidentFacts {
        birth_date: birth,
        statuses: statuses.iter().map(|s| s.to_string()).collect(),
    }
}

const MEAL_DAY: Date = date(2026, 11, 23);

fn q(r: &RuleSet, t: Time, w: &ResidentFacts, price: Option<i64>) -> (i64, i64) {
    let q = r.quote(MEAL_DAY, t, w, price, Today::default()).unwrap();
    assert_eq!(q.price_fen, q.subsidy_fen + q.payable_fen);
    (q.subsidy_fen, q.payable_fen)
}

#[test]
fn putuo_age_bands_low_income_and_the_extra_over_15_yuan() {
    let r = load("shanghai-putuo.toml");
    let noon = time(12, 0, 0, 0);
    let seventy = who(date(1956, 1, 1), &[]);
    let eighty_five = who(date(1941, 1, 1), &[]);
    assert_eq!(q(&r, noon, &seventy, Some(1200)), (120, 1080), "10% of ¥12");
    assert_eq!(
        q(&r, noon, &eighty_five, Some(1200)),
        (180, 1020),
        "15% of ¥12"
    );
    assert_eq!(
        q(&r, noon, &seventy, Some(1500)),
        (350, 1150),
        "10% + ¥2 at ¥15"
    );
    assert_eq!(
        q(&r, noon, &eighty_five, Some(2000)),
        (600, 1400),
        "15% + ¥3 at ¥20"
    );
    let dibao = who(date(1956, 1, 1), &["低保"]);
    assert_eq!(
        q(&r, noon, &dibao, Some(1000)),
        (500, 500),
        "低保 pays ¥5 at ¥10"
    );
    assert_eq!(
        q(&r, noon, &dibao, Some(700)),
        (70, 630),
        "under ¥8 only the age discount"
    );
    let fifty_nine = who(date(1967, 6, 1), &[]);
    assert_eq!(q(&r, noon, &fifty_nine, Some(1200)), (0, 1200));
}

#[test]
fn age_is_counted_on_the_meal_date() {
    let r = load("shanghai-putuo.toml");
    let turns_80_tomorrow = who(date(1946, 11, 24), &[]);
    let turns_80_today = who(date(1946, 11, 23), &[]);
    assert_eq!(
        q(&r, time(12, 0, 0, 0), &turns_80_tomorrow, Some(1000)),
        (100, 900)
    );
    assert_eq!(
        q(&r, time(12, 0, 0, 0), &turns_80_today, Some(1000)),
        (150, 850)
    );
}

#[test]
fn futian_category_one_fixed_and_daily_cap() {
    let r = load("shenzhen-futian.toml");
    let lunch = time(12, 0, 0, 0);
    let tekun = who(date(1950, 1, 1), &["特困"]);
    assert_eq!(
        q(&r, lunch, &tekun, None),
        (1500, 500),
        "menu price ¥20, ¥15 subsidy"
    );
    assert_eq!(
        q(&r, lunch, &who(date(1954, 1, 1), &[]), None),
        (500, 1500),
        "70+: ¥5"
    );
    assert_eq!(
        q(&r, lunch, &who(date(1960, 1, 1), &[]), None),
        (0, 2000),
        "66: nothing"
    );
    // Second meal of the day: the daily cap of ¥30 leaves ¥15.
    let today = Today {
        subsidy_fen: 2000,
        subsidized_in_period: 0,
    };
    let dinner = r
        .quote(MEAL_DAY, time(18, 0, 0, 0), &tekun, None, today)
        .unwrap();
    assert_eq!(dinner.subsidy_fen, 1000);
}

#[test]
fn xuyi_one_yuan_off_in_each_period_and_nothing_outside() {
    let r = load("xuyi.toml");
    let w = who(date(1950, 1, 1), &[]);
    assert_eq!(q(&r, time(7, 0, 0, 0), &w, None), (100, 300));
    assert_eq!(q(&r, time(13, 29, 0, 0), &w, None), (100, 900));
    assert_eq!(q(&r, time(19, 0, 0, 0), &w, None), (100, 900));
    assert_eq!(
        r.quote(MEAL_DAY, time(10, 0, 0, 0), &w, None, Today::default()),
        Err(QuoteError::OutsideMealPeriod)
    );
    assert_eq!(
        r.quote(MEAL_DAY, time(13, 30, 0, 0), &w, None, Today::default()),
        Err(QuoteError::OutsideMealPeriod),
        "end is exclusive"
    );
}

#[test]
fn one_subsidized_meal_per_period() {
    let r = load("xuyi.toml");
    let w = who(date(1950, 1, 1), &[]);
    let second = r
        .quote(
            MEAL_DAY,
            time(12, 0, 0, 0),
            &w,
            None,
            Today {
                subsidy_fen: 100,
                subsidized_in_period: 1,
            },
        )
        .unwrap();
    assert_eq!((second.subsidy_fen, second.payable_fen), (0, 1000));
}

#[test]
fn bad_rule_files_are_rejected_with_a_clear_message() {
    let base = r#"
name = "x"
[[periods]]
name = "lunch"
start = "11:00"
end = "13:00"
"#;
    let cases = [
        (format!("{base}colour = 1"), "unknown field `colour`"),
        (base.replace("13:00", "11:00"), "is its start"),
        (base.replace("13:00", "25:00"), "is not HH:MM or 24:00"),
        (format!("{base}[[periods]]\nname = \"night\"\nstart = \"22:00\"\nend = \"11:30\"\n"), "overlap"),
        (format!("{base}[[periods]]\nname = \"late\"\nstart = \"12:00\"\nend = \"14:00\"\n"), "overlap"),
        (format!("{base}[[subsidies]]\nname = \"s\"\namount = {{ percent = 120 }}\n"), "above 100"),
        (format!("{base}[[subsidies]]\nname = \"s\"\nperiods = [\"brunch\"]\namount = {{ fixed_fen = 1 }}\n"), "no meal period named \"brunch\""),
        (format!("{base}[[subsidies]]\nname = \"s\"\nmin_age = 80\nmax_age = 60\namount = {{ fixed_fen = 1 }}\n"), "min_age 80 is above max_age 60"),
        (format!("{base}[[subsidies]]\nname = \"s\"\namount = {{ fixed_fen = 1.5 }}\n"), "invalid type"),
    ];
    for (text, want) in cases {
        let err = RuleSet::parse(&text).unwrap_err();
        assert!(err.contains(want), "{want:?} not in {err:?}");
    }
}

#[test]
fn a_night_period_crosses_midnight_and_counts_on_the_day_it_started() {
    let r = RuleSet::parse(
        r#"
name = "night shift"
[[periods]]
name = "dinner"
start = "17:00"
end = "24:00"
price_fen = 1200
[[periods]]
name = "night"
start = "00:00"
end = "02:00"
price_fen = 800
"#,
    )
    .unwrap();
    let d = |s: &str| s.parse::<Date>().unwrap();
    let t = |s: &str| s.parse::<Time>().unwrap();
    let at = |date: &str, time: &str| {
        r.meal_at(d(date), t(time))
            .map(|(p, on)| (p.name.clone(), on.to_string()))
    };
    assert_eq!(
        at("2026-03-01", "23:59:59"),
        Some(("dinner".into(), "2026-03-01".into()))
    );
    assert_eq!(
        at("2026-03-02", "00:00"),
        Some(("night".into(), "2026-03-02".into()))
    );
    assert_eq!(at("2026-03-01", "16:59"), None);

    let r = RuleSet::parse(
        r#"
name = "delivered at night"
[[periods]]
name = "late"
start = "22:00"
end = "02:00"
price_fen = 900
[[periods]]
name = "lunch"
start = "11:00"
end = "13:00"
price_fen = 1500
[[subsidies]]
name = "80+"
min_age = 80
amount = { fixed_fen = 100 }
"#,
    )
    .unwrap();
    let at = |date: &str, time: &str| {
        r.meal_at(d(date), t(time))
            .map(|(p, on)| (p.name.clone(), on.to_string()))
    };
    assert_eq!(
        at("2026-03-01", "22:00"),
        Some(("late".into(), "2026-03-01".into()))
    );
    // After midnight it is still the evening's meal, on the evening's date (a new year too).
    assert_eq!(
        at("2026-03-02", "01:59:59"),
        Some(("late".into(), "2026-03-01".into()))
    );
    assert_eq!(
        at("2027-01-01", "00:30"),
        Some(("late".into(), "2026-12-31".into()))
    );
    assert_eq!(at("2026-03-02", "02:00"), None);
    assert_eq!(at("2026-03-02", "21:59"), None);
    // Age is taken on the meal date: born 1946-03-02, 80 only from the 2nd; the 01:00 meal
    // after midnight counts on the 1st.
    let born = who(d("1946-03-02"), &[]);
    let q = |time: &str| {
        r.quote(d("2026-03-02"), t(time), &born, None, Today::default())
            .unwrap()
    };
    assert_eq!(
        (q("01:00").period.as_str(), q("01:00").subsidy_fen),
        ("late", 0)
    );
    assert_eq!(q("22:00").subsidy_fen, 100);
}

const LUNCH_ONLY: &str = r#"
name = "x"
[[periods]]
name = "lunch"
start = "11:00"
end = "13:00"
"#;

#[test]
fn percentages_round_half_up_to_the_fen_unless_the_rules_say_otherwise() {
    let r = load("shanghai-putuo.toml");
    let eighty_five = who(date(1941, 1, 1), &[]);
    // 15 % of ¥14.99 = 224.85 fen.
    assert_eq!(
        q(&r, time(12, 0, 0, 0), &eighty_five, Some(1499)),
        (225, 1274)
    );
    let with = |rounding: &str| {
        let text = format!(
            "rounding = \"{rounding}\"\n{LUNCH_ONLY}[[subsidies]]\nname = \"s\"\namount = {{ percent = 15 }}\n"
        );
        let r = RuleSet::parse(&text).unwrap();
        let w = who(date(1941, 1, 1), &[]);
        [1499, 1490, 1501].map(|p| q(&r, time(12, 0, 0, 0), &w, Some(p)).0)
    };
    assert_eq!(with("half_up"), [225, 224, 225], "224.85, 223.5, 225.15");
    assert_eq!(with("down"), [224, 223, 225]);
    assert_eq!(with("up"), [225, 224, 226]);
}

#[test]
fn absurd_prices_are_refused_not_computed() {
    let r = load("shanghai-putuo.toml");
    let w = who(date(1941, 1, 1), &[]);
    let at = |price: i64| {
        r.quote(
            MEAL_DAY,
            time(12, 0, 0, 0),
            &w,
            Some(price),
            Today::default(),
        )
    };
    assert_eq!(
        at(1 << 62),
        Err(QuoteError::PriceTooHigh {
            price: 1 << 62,
            limit: 100_000
        })
    );
    assert!(matches!(at(i64::MAX), Err(QuoteError::PriceTooHigh { .. })));
    assert_eq!(at(-1), Err(QuoteError::NegativePrice(-1)));
    assert_eq!(at(i64::MIN), Err(QuoteError::NegativePrice(i64::MIN)));
    assert_eq!(
        at(0),
        Err(QuoteError::FreeMeal),
        "no free meals unless allowed"
    );
    assert!(at(100_000).is_ok(), "the limit itself is a price");
}

#[test]
fn free_meals_and_limits_are_set_in_the_rules_file() {
    let text = format!("{LUNCH_ONLY}[limits]\nmax_price_fen = 5000\nallow_free_meals = true\n");
    let r = RuleSet::parse(&text).unwrap();
    let w = who(date(1941, 1, 1), &[]);
    assert_eq!(q(&r, time(12, 0, 0, 0), &w, Some(0)), (0, 0));
    assert!(matches!(
        r.quote(
            MEAL_DAY,
            time(12, 0, 0, 0),
            &w,
            Some(5001),
            Today::default()
        ),
        Err(QuoteError::PriceTooHigh { limit: 5000, .. })
    ));
    let defaults = RuleSet::parse(LUNCH_ONLY).unwrap().limits;
    assert_eq!(defaults, Limits::default());
    assert_eq!(
        (defaults.max_price_fen, defaults.max_topup_fen),
        (100_000, 1_000_000)
    );
}

#[test]
fn amounts_in_the_rules_file_that_could_overflow_are_rejected() {
    let cases = [
        (format!("{LUNCH_ONLY}[[subsidies]]\nname = \"s\"\namount = {{ fixed_fen = 9223372036854775807 }}\n"), "is above"),
        (format!("{LUNCH_ONLY}[[subsidies]]\nname = \"s\"\nextra_fen = 9223372036854775807\namount = {{ fixed_fen = 1 }}\n"), "extra_fen"),
        (format!("daily_cap_fen = -1\n{LUNCH_ONLY}"), "daily_cap_fen"),
        (format!("{LUNCH_ONLY}price_fen = 0\n"), "free meal"),
        (format!("{LUNCH_ONLY}price_fen = 100001\n"), "limits.max_price_fen"),
        (format!("{LUNCH_ONLY}[limits]\nmax_topup_fen = 0\n"), "limits.max_topup_fen"),
        (format!("{LUNCH_ONLY}[limits]\nmax_price = 1\n"), "unknown field"),
        (format!("rounding = \"banker\"\n{LUNCH_ONLY}"), "unknown variant"),
    ];
    for (text, want) in cases {
        let err = RuleSet::parse(&text).unwrap_err();
        assert!(err.contains(want), "{want:?} not in {err:?}");
    }
}

proptest::proptest! {
    #[test]
    fn any_price_is_quoted_or_refused_without_panicking(price in proptest::num::i64::ANY, pct in 0u8..=100, extra in 0i64..=MAX_LIMIT_FEN) {
        let text = format!("combine = \"sum\"\ndaily_cap_fen = {extra}\n{LUNCH_ONLY}[[subsidies]]\nname = \"a\"\namount = {{ percent = {pct} }}\nextra_fen = {extra}\n[[subsidies]]\nname = \"b\"\namount = {{ fixed_fen = {extra} }}\n");
        let r = RuleSet::parse(&text).unwrap();
        let today = Today { subsidy_fen: i64::MIN, subsidized_in_period: 0 };
        match r.quote(MEAL_DAY, time(12, 0, 0, 0), &who(date(1950, 1, 1), &[]), Some(price), today) {
            Ok(q) => {
                proptest::prop_assert!((1..=100_000).contains(&price));
                proptest::prop_assert!(q.subsidy_fen >= 0 && q.subsidy_fen <= price);
                proptest::prop_assert_eq!(q.subsidy_fen + q.payable_fen, price);
            }
            Err(e) => proptest::prop_assert!(!(1..=100_000).contains(&price), "{e}"),
        }
    }

    #[test]
    fn a_quote_never_subsidizes_more_than_the_price(price in 1i64..=100_000, pct in 0u8..=100, fixed in 0i64..100_000, year in 1920i16..1970) {
        let text = format!(r#"
name = "p"
combine = "sum"
[[periods]]
name = "lunch"
start = "11:00"
end = "13:00"
[[subsidies]]
name = "a"
amount = {{ percent = {pct} }}
[[subsidies]]
name = "b"
amount = {{ fixed_fen = {fixed} }}
"#);
        let r = RuleSet::parse(&text).unwrap();
        let q = r.quote(MEAL_DAY, time(12, 0, 0, 0), &who(date(year, 1, 1), &[]), Some(price), Today::default()).unwrap();
        proptest::prop_assert!(q.subsidy_fen >= 0 && q.subsidy_fen <= price);
        proptest::prop_assert_eq!(q.subsidy_fen + q.payable_fen, price);
    }
}
