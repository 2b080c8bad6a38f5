//! Visit tasks (敲门行动): a resident who showed no activity by the check-in deadline gets a
//! `missed_checkin` alert; here it is a task for a visit. Open tasks of the staff member's own
//! grid come first, then the rest by age; the last week's done visits below, with their notes.
//! "On my way" acknowledges, "visited" resolves with the visit note (required here; the API
//! records the session's staff id as `by`).

use super::nav::Page;
use super::{layout, local_time, page, refused, unavailable, Lang};
use crate::alerting::alert_from_row;
use crate::auth::Actor;
use crate::http::Api;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use eldergate_protocol::payload::{AlertState, StaffAlert};
use maud::html;

/// Done visits shown: this many days back.
const DONE_DAYS: i64 = 7;

/// `GET /console/visits`
pub(super) async fn show(State(api): State<Api>, actor: Actor, headers: HeaderMap) -> Response {
    let lang = Lang::of(&headers);
    if let Some(r) = refused(lang, &actor, Page::Visits) {
        return r;
    }
    let since = crate::journal::format_ts(
        jiff::Timestamp::now()
            .checked_sub(jiff::SignedDuration::from_hours(24 * DONE_DAYS))
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH),
    );
    let rows = match sqlx::query(
        // Two index reads (the open alerts; the kind's resolved ones since), not a scan of every
        // alert: `+kind` keeps SQLite on the open-alerts index for the first.
        "SELECT * FROM alerts WHERE +kind = 'missed_checkin' AND state IN ('raised', 'acknowledged')
         UNION ALL
         SELECT * FROM alerts WHERE kind = 'missed_checkin' AND state = 'resolved' AND resolved_at >= ?
         ORDER BY id",
    )
    .bind(&since)
    .fetch_all(api.journal.readers())
    .await
    {
        Ok(r) => r,
        Err(e) => return unavailable(e),
    };
    let alerts: Vec<StaffAlert> = match rows
        .iter()
        .map(|r| alert_from_row(r, &api.registry))
        .collect::<Result<_, _>>()
    {
        Ok(a) => a,
        Err(e) => return unavailable(e),
    };
    let roster = api.registry.residents.current();
    let my_grid = api
        .registry
        .staff
        .get(&actor.staff_id)
        .and_then(|s| s.grid.clone());
    let grid_of = |a: &StaffAlert| {
        a.resident_id
            .as_deref()
            .and_then(|id| roster.get(id))
            .and_then(|r| r.grid.clone())
    };
    let mut open: Vec<&StaffAlert> = alerts
        .iter()
        .filter(|a| matches!(a.state, AlertState::Raised | AlertState::Acknowledged))
        .collect();
    // Own grid first, then the oldest first.
    open.sort_by_key(|a| {
        (
            my_grid.is_none() || grid_of(a) != my_grid,
            a.raised_at.clone(),
        )
    });
    let mut done: Vec<&StaffAlert> = alerts
        .iter()
        .filter(|a| a.state == AlertState::Resolved)
        .collect();
    done.reverse();
    let may_act = actor.role.may_act_on_alerts();
    let body = html! {
        h2 { (lang.t("敲门任务", "Visit tasks")) }
        p.meta { (lang.t("未在截止时间前报平安的老人，需要上门看看。", "Residents with no sign of activity by the check-in deadline: go and see them."))
            @if let Some(g) = &my_grid { " " (lang.t("你的网格：", "Your grid: ")) strong { (g) } } }
        div.status #status role="status" {}
        @if open.is_empty() { p.empty { (lang.t("没有待办的敲门任务", "No open visit tasks")) } }
        @for a in &open {
            @let r = a.resident_id.as_deref().and_then(|id| roster.get(id));
            @let mine = my_grid.is_some() && grid_of(a) == my_grid;
            article.card.medium.task data-id=(a.alert_id) data-resident=(a.resident_id.as_deref().unwrap_or("")) {
                h3 { (a.resident_name.as_deref().unwrap_or("")) " " (a.resident_id.as_deref().unwrap_or(""))
                    @if mine { " · " span.ok { (lang.t("本网格", "your grid")) } } }
                @if let Some(r) = r {
                    div.meta { (r.building.as_deref().unwrap_or("")) " " (r.unit.as_deref().unwrap_or("")) " " (r.room.as_deref().unwrap_or(""))
                        @if let Some(g) = &r.grid { " · " (lang.t("网格 ", "grid ")) (g) }
                        @if let Some(s) = &r.statuses { " · " (s) } }
                }
                div.meta { (lang.t("发出 ", "raised ")) (local_time(&api.registry, &a.raised_at))
                    @if let Some(d) = &a.detail { " · " (d) } }
                @if let Some(ack) = &a.acknowledged {
                    div.meta { (lang.t("已在路上：", "On the way: ")) (ack.by) " " (local_time(&api.registry, &ack.at)) }
                }
                @if may_act {
                    @if a.state == AlertState::Raised {
                        form.act data-api={ "/api/alerts/" (a.alert_id) "/ack" } data-done=(lang.t("已记录：在路上", "Recorded: on the way")) {
                            input type="hidden" name="note" value=(lang.t("在路上", "on my way"));
                            button.ack type="submit" { (lang.t("我去看", "I'm going")) }
                        }
                    }
                    form.act.visit data-api={ "/api/alerts/" (a.alert_id) "/resolve" } data-done=(lang.t("已记录上门结果", "Visit recorded")) {
                        input name="note" required maxlength="500" placeholder=(lang.t("上门情况（必填）", "What you found (required)"));
                        button.resolve type="submit" { (lang.t("已上门", "Visited")) }
                        span.status {}
                    }
                }
            }
        }
        h3 { (lang.t("最近 7 天已完成", "Done in the last 7 days")) }
        @if done.is_empty() { p.empty { (lang.t("无", "None")) } }
        @for a in &done {
            article.card.low.done data-id=(a.alert_id) {
                div { strong { (a.resident_name.as_deref().unwrap_or("")) " " (a.resident_id.as_deref().unwrap_or("")) } }
                @if let Some(res) = &a.resolved {
                    div.meta { (res.by) " " (local_time(&api.registry, &res.at))
                        @if let Some(n) = &res.note { " — " span.note { (n) } } }
                }
            }
        }
        script src="/console/static/pages.js" {}
    };
    page(layout(
        lang,
        lang.t("敲门任务", "Visit tasks"),
        Some(&actor),
        "/console/visits",
        body,
    ))
}
