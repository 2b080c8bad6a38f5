//! The managers' overview: today and this month (local dates) — alarms and other alerts, the
//! acknowledgement time p50 / p90 (nearest rank, seconds from raised to acknowledged), alerts
//! that ran to the end of their escalation ladder, visits done, meals and subsidy totals (voided
//! meals excluded), and devices offline now. Read-only.

use super::nav::Page;
use super::{day_start, layout, page, refused, today, unavailable, yuan, Lang};
use crate::auth::Actor;
use crate::http::Api;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use eldergate_protocol::payload::Priority;
use maud::{html, Markup};
use sqlx::Row;

/// What one window holds.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Figures {
    /// SOS alarms raised.
    pub alarms: i64,
    /// Every alert raised (all kinds).
    pub alerts: i64,
    /// Acknowledgement time of the alarms, seconds: p50 and p90.
    pub ack_p50_s: Option<i64>,
    /// See `ack_p50_s`.
    pub ack_p90_s: Option<i64>,
    /// Alarms never acknowledged (still raised, or closed without an acknowledgement).
    pub unacknowledged: i64,
    /// Alerts whose escalation reached the last step of their ladder.
    pub ladder_end: i64,
    /// Missed check-ins resolved (visits done).
    pub visits_done: i64,
    /// Meals served (not voided).
    pub meals: i64,
    /// Their prices, fen.
    pub gross_fen: i64,
    /// Their subsidies, fen.
    pub subsidy_fen: i64,
}

/// The `p`-th percentile (0–100) by nearest rank of sorted `v`.
pub fn percentile(v: &[i64], p: usize) -> Option<i64> {
    if v.is_empty() {
        return None;
    }
    let rank = (p * v.len()).div_ceil(100).max(1);
    v.get(rank - 1).copied()
}

async fn figures(
    api: &Api,
    from: &str,
    to: &str,
    from_day: &str,
    to_day: &str,
) -> Result<Figures, sqlx::Error> {
    let pool = api.journal.readers();
    let rows = sqlx::query(
        "SELECT kind, priority, escalation_step, acked_at IS NOT NULL AS acked,
                CAST(ROUND((julianday(acked_at) - julianday(raised_at)) * 86400) AS INTEGER) AS ack_s
         FROM alerts WHERE raised_at >= ? AND raised_at < ?",
    )
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?;
    let mut f = Figures::default();
    let mut ack = Vec::new();
    for r in &rows {
        let kind: String = r.try_get("kind")?;
        let priority = match r.try_get::<String, _>("priority")?.as_str() {
            "low" => Priority::Low,
            "medium" => Priority::Medium,
            _ => Priority::High,
        };
        let step: i64 = r.try_get("escalation_step")?;
        let steps = api.registry.ladder(priority).steps.len();
        f.alerts += 1;
        if steps > 1 && usize::try_from(step).is_ok_and(|s| s + 1 >= steps) {
            f.ladder_end += 1;
        }
        if kind == "sos" {
            f.alarms += 1;
            match r.try_get::<Option<i64>, _>("ack_s")? {
                Some(s) if r.try_get::<bool, _>("acked")? => ack.push(s.max(0)),
                _ => f.unacknowledged += 1,
            }
        }
    }
    ack.sort_unstable();
    f.ack_p50_s = percentile(&ack, 50);
    f.ack_p90_s = percentile(&ack, 90);
    f.visits_done = sqlx::query(
        "SELECT COUNT(*) FROM alerts WHERE kind = 'missed_checkin' AND state = 'resolved'
           AND resolved_at >= ? AND resolved_at < ?",
    )
    .bind(from)
    .bind(to)
    .fetch_one(pool)
    .await?
    .try_get(0)?;
    let m = sqlx::query(
        "SELECT COUNT(*), COALESCE(SUM(price_fen), 0), COALESCE(SUM(subsidy_fen), 0) FROM meals
         WHERE local_date >= ? AND local_date <= ? AND voided_by IS NULL",
    )
    .bind(from_day)
    .bind(to_day)
    .fetch_one(pool)
    .await?;
    f.meals = m.try_get(0)?;
    f.gross_fen = m.try_get(1)?;
    f.subsidy_fen = m.try_get(2)?;
    Ok(f)
}

fn secs(lang: Lang, s: Option<i64>) -> String {
    match s {
        None => "—".into(),
        Some(s) if s < 120 => format!("{s}{}", lang.t(" 秒", " s")),
        Some(s) => format!(
            "{}{} {}{}",
            s / 60,
            lang.t(" 分", " min"),
            s % 60,
            lang.t(" 秒", " s")
        ),
    }
}

fn column(lang: Lang, title: &str, f: &Figures) -> Markup {
    html! {
        section.card data-window=(title) {
            h3 { (title) }
            table { tbody {
                tr { th { (lang.t("紧急呼叫", "SOS alarms")) } td.num.alarms { (f.alarms) } }
                tr { th { (lang.t("全部告警", "All alerts")) } td.num { (f.alerts) } }
                tr { th { (lang.t("确认用时 p50", "Time to acknowledge p50")) } td.num { (secs(lang, f.ack_p50_s)) } }
                tr { th { (lang.t("确认用时 p90", "Time to acknowledge p90")) } td.num { (secs(lang, f.ack_p90_s)) } }
                tr { th { (lang.t("未确认的呼叫", "Alarms never acknowledged")) } td.num { (f.unacknowledged) } }
                tr { th { (lang.t("升级到最后一级", "Ran to the end of the ladder")) } td.num { (f.ladder_end) } }
                tr { th { (lang.t("已完成上门", "Visits done")) } td.num.visits { (f.visits_done) } }
                tr { th { (lang.t("用餐份数", "Meals")) } td.num.meals { (f.meals) } }
                tr { th { (lang.t("餐费总额", "Meal prices")) } td.num { "¥" (yuan(f.gross_fen)) } }
                tr { th { (lang.t("补贴总额", "Subsidies")) } td.num { "¥" (yuan(f.subsidy_fen)) } }
            } }
        }
    }
}

/// `GET /console/overview`
pub(super) async fn show(State(api): State<Api>, actor: Actor, headers: HeaderMap) -> Response {
    let lang = Lang::of(&headers);
    if let Some(r) = refused(lang, &actor, Page::Overview) {
        return r;
    }
    let day = today(&api.registry);
    let first = day.first_of_month();
    let windows = (|| {
        let tomorrow = day.tomorrow().ok()?;
        let next_month = first.checked_add(jiff::Span::new().months(1)).ok()?;
        Some((
            day_start(&api.registry, day)?,
            day_start(&api.registry, tomorrow)?,
            day_start(&api.registry, first)?,
            day_start(&api.registry, next_month)?,
        ))
    })();
    let Some((d0, d1, m0, m1)) = windows else {
        return unavailable("today is out of the calendar's range");
    };
    let (ds, ms, me) = (
        day.to_string(),
        first.to_string(),
        day.last_of_month().to_string(),
    );
    let today_f = match figures(&api, &d0, &d1, &ds, &ds).await {
        Ok(f) => f,
        Err(e) => return unavailable(e),
    };
    let month_f = match figures(&api, &m0, &m1, &ms, &me).await {
        Ok(f) => f,
        Err(e) => return unavailable(e),
    };
    let offline = match super::devices::device_rows(&api, None).await {
        Ok(d) => d.iter().filter(|d| !d.online).count(),
        Err(e) => return unavailable(e),
    };
    let body = html! {
        h2 { (lang.t("概况", "Overview")) }
        p { (lang.t("现在离线的设备：", "Devices offline now: ")) a href="/console/devices?show=offline" { strong #offline { (offline) } } }
        div.grid2 {
            (column(lang, &format!("{} {}", lang.t("今天", "Today"), ds), &today_f))
            (column(lang, &format!("{} {}", lang.t("本月", "This month"), &ms[..7.min(ms.len())]), &month_f))
        }
        p.meta { (lang.t("确认用时：从告警发出到有人确认，仅统计紧急呼叫。", "Time to acknowledge: from raised to acknowledged, SOS alarms only.")) }
    };
    page(layout(
        lang,
        lang.t("概况", "Overview"),
        Some(&actor),
        "/console/overview",
        body,
    ))
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_by_nearest_rank() {
        assert_eq!(percentile(&[], 50), None);
        assert_eq!(percentile(&[7], 90), Some(7));
        let v: Vec<i64> = (1..=10).collect();
        assert_eq!(percentile(&v, 50), Some(5));
        assert_eq!(percentile(&v, 90), Some(9));
        assert_eq!(percentile(&v, 100), Some(10));
    }
}
