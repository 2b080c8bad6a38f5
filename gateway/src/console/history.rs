//! Alert history: filters (local dates, kind, state, resident, grid, who acknowledged, response
//! time), one alert's full audit trail (its row and every journal event that names it), and a CSV
//! export of exactly the filtered rows (the same filter code builds both queries).
//!
//! Invariants: every filter value is checked before any SQL runs and bound as a parameter (a bad
//! value is a 400 that says which field, never a 500); the page lists at most [`PAGE_ROWS`]
//! alerts and the CSV at most [`CSV_ROWS`] (the newest first; the page says when it cut); names
//! are masked in both, as on the board.

use super::nav::Page;
use super::{
    bad_query, date_field, day_start, field, kind_label, layout, local_time, page, refused,
    unavailable, Lang, ALERT_KINDS,
};
use crate::alerting::alert_from_row;
use crate::auth::Actor;
use crate::http::Api;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::{Deserialize, Serialize};
use sqlx::{QueryBuilder, Row, Sqlite};

/// Most alerts the page lists.
pub const PAGE_ROWS: i64 = 300;
/// Most alerts one CSV export holds.
pub const CSV_ROWS: i64 = 100_000;
/// Largest response time a filter takes, seconds (a week).
const MAX_ACK_S: i64 = 7 * 24 * 3600;

/// The filters, as a form sends them (every field optional; blank = not filtered).
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct Filters {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    resident: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    grid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    acked_by: Option<String>,
    /// Acknowledged at least this many seconds after it was raised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    min_ack_s: Option<String>,
    /// Acknowledged at most this many seconds after it was raised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_ack_s: Option<String>,
}

/// Checked filters, ready to bind.
#[derive(Debug, Default)]
struct Checked {
    from: Option<String>,
    to: Option<String>,
    kind: Option<String>,
    state: Option<String>,
    resident: Option<String>,
    grid_residents: Option<Vec<String>>,
    acked_by: Option<String>,
    min_ack_s: Option<i64>,
    max_ack_s: Option<i64>,
}

fn seconds(v: &Option<String>, name: &str) -> Result<Option<i64>, String> {
    match field(v, name, 12)? {
        None => Ok(None),
        Some(s) => match s.parse::<i64>() {
            Ok(n) if (0..=MAX_ACK_S).contains(&n) => Ok(Some(n)),
            _ => Err(format!(
                "{name}={s:?}: a number of seconds from 0 to {MAX_ACK_S}"
            )),
        },
    }
}

fn check(f: &Filters, api: &Api) -> Result<Checked, String> {
    let from = date_field(&f.from, "from")?;
    let to = date_field(&f.to, "to")?;
    if let (Some(a), Some(b)) = (from, to) {
        if a > b {
            return Err(format!("from {a} is after to {b}"));
        }
    }
    let start = |d: jiff::civil::Date, name: &str| {
        day_start(&api.registry, d).ok_or_else(|| format!("{name}={d}: out of range"))
    };
    let kind = field(&f.kind, "kind", 32)?;
    if let Some(k) = kind {
        if !ALERT_KINDS.contains(&k) {
            return Err(format!("kind={k:?}: one of {}", ALERT_KINDS.join(", ")));
        }
    }
    let state = field(&f.state, "state", 16)?;
    if let Some(s) = state {
        if !["open", "raised", "acknowledged", "resolved", "cancelled"].contains(&s) {
            return Err(format!(
                "state={s:?}: open, raised, acknowledged, resolved or cancelled"
            ));
        }
    }
    let grid_residents = field(&f.grid, "grid", 64)?.map(|g| {
        api.registry
            .residents
            .current()
            .values()
            .filter(|r| r.grid.as_deref() == Some(g))
            .map(|r| r.resident_id.clone())
            .collect::<Vec<_>>()
    });
    let min_ack_s = seconds(&f.min_ack_s, "min_ack_s")?;
    let max_ack_s = seconds(&f.max_ack_s, "max_ack_s")?;
    if let (Some(a), Some(b)) = (min_ack_s, max_ack_s) {
        if a > b {
            return Err(format!("min_ack_s {a} is above max_ack_s {b}"));
        }
    }
    Ok(Checked {
        from: from.map(|d| start(d, "from")).transpose()?,
        to: to
            .map(|d| {
                d.tomorrow()
                    .map_err(|_| format!("to={d}: out of range"))
                    .and_then(|t| start(t, "to"))
            })
            .transpose()?,
        kind: kind.map(str::to_string),
        state: state.map(str::to_string),
        resident: field(&f.resident, "resident", 64)?.map(str::to_string),
        grid_residents,
        acked_by: field(&f.acked_by, "acked_by", 64)?.map(str::to_string),
        min_ack_s,
        max_ack_s,
    })
}

const ACK_S: &str = "CAST(ROUND((julianday(acked_at) - julianday(raised_at)) * 86400) AS INTEGER)";

fn query(c: &Checked, limit: i64) -> QueryBuilder<'static, Sqlite> {
    let mut q = QueryBuilder::<Sqlite>::new(format!(
        "SELECT *, CASE WHEN acked_at IS NULL THEN NULL ELSE {ACK_S} END AS ack_s FROM alerts WHERE 1 = 1"
    ));
    if let Some(v) = &c.from {
        q.push(" AND raised_at >= ").push_bind(v.clone());
    }
    if let Some(v) = &c.to {
        q.push(" AND raised_at < ").push_bind(v.clone());
    }
    if let Some(v) = &c.kind {
        // `+kind`: not by the (kind, resolved_at) index, which would read every alert of a
        // common kind and sort them; newest first by id stops at the limit.
        q.push(" AND +kind = ").push_bind(v.clone());
    }
    match c.state.as_deref() {
        Some("open") => {
            q.push(" AND state IN ('raised', 'acknowledged')");
        }
        Some(s) => {
            q.push(" AND state = ").push_bind(s.to_string());
        }
        None => {}
    }
    if let Some(v) = &c.resident {
        q.push(" AND resident_id = ").push_bind(v.clone());
    }
    if let Some(ids) = &c.grid_residents {
        let json = serde_json::Value::from(ids.clone()).to_string();
        q.push(" AND resident_id IN (SELECT value FROM json_each(")
            .push_bind(json)
            .push("))");
    }
    if let Some(v) = &c.acked_by {
        q.push(" AND acked_by = ").push_bind(v.clone());
    }
    if let Some(v) = c.min_ack_s {
        q.push(format!(" AND acked_at IS NOT NULL AND {ACK_S} >= "))
            .push_bind(v);
    }
    if let Some(v) = c.max_ack_s {
        q.push(format!(" AND acked_at IS NOT NULL AND {ACK_S} <= "))
            .push_bind(v);
    }
    q.push(" ORDER BY id DESC LIMIT ").push_bind(limit);
    q
}

/// One listed alert.
struct Line {
    alert: eldergate_protocol::payload::StaffAlert,
    state: String,
    ack_s: Option<i64>,
    grid: Option<String>,
}

async fn lines(api: &Api, c: &Checked, limit: i64) -> Result<Vec<Line>, String> {
    let rows = query(c, limit)
        .build()
        .fetch_all(api.journal.readers())
        .await
        .map_err(|e| e.to_string())?;
    let roster = api.registry.residents.current();
    rows.iter()
        .map(|r| {
            let alert = alert_from_row(r, &api.registry).map_err(|e| e.to_string())?;
            let grid = alert
                .resident_id
                .as_deref()
                .and_then(|id| roster.get(id))
                .and_then(|r| r.grid.clone());
            Ok(Line {
                state: r.try_get("state").map_err(|e| e.to_string())?,
                ack_s: r.try_get("ack_s").map_err(|e| e.to_string())?,
                grid,
                alert,
            })
        })
        .collect()
}

fn state_label(lang: Lang, s: &str) -> String {
    let zh = match s {
        "raised" => "未确认",
        "acknowledged" => "已确认",
        "resolved" => "已处理",
        "cancelled" => "已取消",
        other => other,
    };
    lang.t(zh, s).to_string()
}

/// `GET /console/history?…`
pub(super) async fn show(
    State(api): State<Api>,
    actor: Actor,
    headers: HeaderMap,
    Query(f): Query<Filters>,
) -> Response {
    let lang = Lang::of(&headers);
    if let Some(r) = refused(lang, &actor, Page::History) {
        return r;
    }
    let c = match check(&f, &api) {
        Ok(c) => c,
        Err(m) => return bad_query(lang, &actor, &m),
    };
    let found = match lines(&api, &c, PAGE_ROWS).await {
        Ok(l) => l,
        Err(e) => return unavailable(e),
    };
    let csv_link = format!(
        "/console/history.csv?{}",
        serde_urlencoded::to_string(&f).unwrap_or_default()
    );
    let v = |o: &Option<String>| o.clone().unwrap_or_default();
    let grids: std::collections::BTreeSet<String> = api
        .registry
        .residents
        .current()
        .values()
        .filter_map(|r| r.grid.clone())
        .collect();
    let body = html! {
        h2 { (lang.t("告警历史", "Alert history")) }
        form.filters method="get" action="/console/history" {
            label { (lang.t("从", "From")) input type="date" name="from" value=(v(&f.from)); }
            label { (lang.t("到", "To")) input type="date" name="to" value=(v(&f.to)); }
            label { (lang.t("类型", "Kind"))
                select name="kind" {
                    option value="" { (lang.t("全部", "all")) }
                    @for k in ALERT_KINDS {
                        option value=(k) selected[f.kind.as_deref() == Some(*k)] { (kind_label(lang, k)) }
                    }
                }
            }
            label { (lang.t("状态", "State"))
                select name="state" {
                    option value="" { (lang.t("全部", "all")) }
                    @for s in ["open", "raised", "acknowledged", "resolved", "cancelled"] {
                        option value=(s) selected[f.state.as_deref() == Some(s)] {
                            @if s == "open" { (lang.t("未关闭", "open")) } @else { (state_label(lang, s)) }
                        }
                    }
                }
            }
            label { (lang.t("老人编号", "Resident id")) input name="resident" value=(v(&f.resident)) maxlength="64"; }
            label { (lang.t("网格", "Grid"))
                select name="grid" {
                    option value="" { (lang.t("全部", "all")) }
                    @for g in &grids { option value=(g) selected[f.grid.as_deref() == Some(g.as_str())] { (g) } }
                }
            }
            label { (lang.t("确认人（员工号）", "Acknowledged by (staff id)")) input name="acked_by" value=(v(&f.acked_by)) maxlength="64"; }
            label { (lang.t("响应 ≥ 秒", "Response ≥ s")) input name="min_ack_s" inputmode="numeric" value=(v(&f.min_ack_s)); }
            label { (lang.t("响应 ≤ 秒", "Response ≤ s")) input name="max_ack_s" inputmode="numeric" value=(v(&f.max_ack_s)); }
            button type="submit" { (lang.t("筛选", "Filter")) }
            a.button href=(csv_link) download { (lang.t("导出 CSV", "Export CSV")) }
        }
        p.meta {
            (found.len()) (lang.t(" 条", " alerts"))
            @if found.len() as i64 >= PAGE_ROWS {
                " · " (lang.t("只显示最新的 ", "showing the newest ")) (PAGE_ROWS) (lang.t(" 条；导出 CSV 可得全部", "; export CSV for all"))
            }
        }
        @for l in &found {
            article.card.(priority_class(l.alert.priority)) data-id=(l.alert.alert_id) {
                h3 { a href={ "/console/alerts/" (l.alert.alert_id) } { "#" (l.alert.alert_id) " " (kind_label(lang, &l.alert.kind)) } " · " (state_label(lang, &l.state)) }
                div.meta {
                    (l.alert.resident_name.as_deref().unwrap_or("")) " " (l.alert.resident_id.as_deref().unwrap_or(""))
                    @if let Some(g) = &l.grid { " · " (g) }
                    " · " (l.alert.location.as_deref().unwrap_or(&l.alert.device_id))
                }
                div.meta { (lang.t("发生 ", "raised ")) (local_time(&api.registry, &l.alert.raised_at)) }
                @if let Some(a) = &l.alert.acknowledged {
                    div.meta.acked { (lang.t("确认：", "acknowledged by ")) strong { (a.by) } " " (local_time(&api.registry, &a.at))
                        @if let Some(s) = l.ack_s { " (" (s) (lang.t(" 秒", " s")) ")" }
                        @if let Some(n) = &a.note { " — " (n) } }
                }
                @if let Some(a) = &l.alert.resolved {
                    div.meta { (lang.t("处理：", "resolved by ")) strong { (a.by) } " " (local_time(&api.registry, &a.at))
                        @if let Some(n) = &a.note { " — " (n) } }
                }
            }
        }
    };
    page(layout(
        lang,
        lang.t("告警历史", "Alert history"),
        Some(&actor),
        "/console/history",
        body,
    ))
}

fn priority_class(p: eldergate_protocol::payload::Priority) -> &'static str {
    use eldergate_protocol::payload::Priority;
    match p {
        Priority::High => "high",
        Priority::Medium => "medium",
        Priority::Low => "low",
    }
}

/// `GET /console/history.csv?…`: the same filters, UTF-8 with a BOM (spreadsheets), masked
/// names, times in UTC as stored and local.
pub(super) async fn csv_export(
    State(api): State<Api>,
    actor: Actor,
    headers: HeaderMap,
    Query(f): Query<Filters>,
) -> Response {
    let lang = Lang::of(&headers);
    if let Some(r) = refused(lang, &actor, Page::History) {
        return r;
    }
    let c = match check(&f, &api) {
        Ok(c) => c,
        Err(m) => return bad_query(lang, &actor, &m),
    };
    let found = match lines(&api, &c, CSV_ROWS).await {
        Ok(l) => l,
        Err(e) => return unavailable(e),
    };
    let mut w = csv::Writer::from_writer(b"\xEF\xBB\xBF".to_vec());
    let head = [
        "alert_id",
        "kind",
        "priority",
        "state",
        "resident_id",
        "resident_name",
        "grid",
        "device_id",
        "location",
        "raised_at",
        "raised_local",
        "acked_by",
        "acked_at",
        "ack_s",
        "ack_note",
        "resolved_by",
        "resolved_at",
        "resolve_note",
        "ladder_step",
        "press_count",
    ];
    let mut result = w.write_record(head);
    for l in &found {
        if result.is_err() {
            break;
        }
        let a = &l.alert;
        let priority = priority_class(a.priority);
        let ack = a.acknowledged.as_ref();
        let res = a.resolved.as_ref();
        let step = (a.step + 1).to_string();
        let presses = a.press_count.to_string();
        let ack_s = l.ack_s.map(|s| s.to_string()).unwrap_or_default();
        let id = a.alert_id.to_string();
        let raised_local = local_time(&api.registry, &a.raised_at);
        result = w.write_record([
            id.as_str(),
            a.kind.as_str(),
            priority,
            l.state.as_str(),
            a.resident_id.as_deref().unwrap_or(""),
            a.resident_name.as_deref().unwrap_or(""),
            l.grid.as_deref().unwrap_or(""),
            a.device_id.as_str(),
            a.location.as_deref().unwrap_or(""),
            a.raised_at.as_str(),
            raised_local.as_str(),
            ack.map(|x| x.by.as_str()).unwrap_or(""),
            ack.map(|x| x.at.as_str()).unwrap_or(""),
            ack_s.as_str(),
            ack.and_then(|x| x.note.as_deref()).unwrap_or(""),
            res.map(|x| x.by.as_str()).unwrap_or(""),
            res.map(|x| x.at.as_str()).unwrap_or(""),
            res.and_then(|x| x.note.as_deref()).unwrap_or(""),
            step.as_str(),
            presses.as_str(),
        ]);
    }
    let bytes = match result
        .map_err(|e| e.to_string())
        .and_then(|_| w.into_inner().map_err(|e| e.to_string()))
    {
        Ok(b) => b,
        Err(e) => return unavailable(e),
    };
    let name = format!(
        "alerts-{}.csv",
        crate::journal::format_ts(jiff::Timestamp::now())
            .get(..10)
            .unwrap_or("export")
    );
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        bytes,
    )
        .into_response()
}

/// `GET /console/alerts/{id}`: the alert and its audit trail, every event in journal order.
pub(super) async fn detail(
    State(api): State<Api>,
    actor: Actor,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Response {
    let lang = Lang::of(&headers);
    if let Some(r) = refused(lang, &actor, Page::History) {
        return r;
    }
    let pool = api.journal.readers();
    let row = match sqlx::query(&format!(
        "SELECT *, CASE WHEN acked_at IS NULL THEN NULL ELSE {ACK_S} END AS ack_s FROM alerts WHERE id = ?"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
    {
        Ok(Some(r)) => r,
        Ok(None) => {
            return super::refusal(
                lang,
                &actor,
                StatusCode::NOT_FOUND,
                &format!("{} {id}", lang.t("没有这个告警：", "No such alert:")),
            )
        }
        Err(e) => return unavailable(e),
    };
    let alert = match alert_from_row(&row, &api.registry) {
        Ok(a) => a,
        Err(e) => return unavailable(e),
    };
    let state: String = row.try_get("state").unwrap_or_default();
    let ack_s: Option<i64> = row.try_get("ack_s").unwrap_or(None);
    let events = match sqlx::query(
        "SELECT seq, kind, received_at, body FROM events WHERE alert_id = ? ORDER BY seq",
    )
    .bind(id)
    .fetch_all(pool)
    .await
    {
        Ok(rows) => rows,
        Err(e) => return unavailable(e),
    };
    let body = html! {
        h2 { "#" (alert.alert_id) " " (kind_label(lang, &alert.kind)) " · " (state_label(lang, &state)) }
        div.card {
            div.meta { (alert.resident_name.as_deref().unwrap_or("")) " "
                @if let Some(r) = &alert.resident_id { a href={ "/console/residents/" (r) } { (r) } }
                " · " (alert.location.as_deref().unwrap_or(&alert.device_id)) " · " (alert.device_id) }
            @if let Some(d) = &alert.detail { div.meta { (d) } }
            div.meta { (lang.t("发生 ", "raised ")) (local_time(&api.registry, &alert.raised_at))
                " · " (lang.t("升级第 ", "ladder step ")) (alert.step + 1) (lang.t(" 级", ""))
                " · " (alert.press_count) (lang.t(" 次按键", " presses")) }
            @if let Some(a) = &alert.acknowledged {
                div.meta.acked { (lang.t("确认：", "acknowledged by ")) strong { (a.by) } " " (local_time(&api.registry, &a.at))
                    @if let Some(s) = ack_s { " (" (s) (lang.t(" 秒", " s")) ")" }
                    @if let Some(n) = &a.note { " — " (n) } }
            }
            @if let Some(a) = &alert.resolved {
                div.meta { (lang.t("处理：", "resolved by ")) strong { (a.by) } " " (local_time(&api.registry, &a.at))
                    @if let Some(n) = &a.note { " — " (n) } }
            }
        }
        h3 { (lang.t("全部记录", "Audit trail")) }
        div.scroll {
            table #trail {
                thead { tr { th { "seq" } th { (lang.t("时间", "Time")) } th { (lang.t("事件", "Event")) } th { (lang.t("内容", "Detail")) } } }
                tbody {
                    @for e in &events {
                        tr {
                            td.num { (e.try_get::<i64, _>("seq").unwrap_or_default()) }
                            td { (local_time(&api.registry, &e.try_get::<String, _>("received_at").unwrap_or_default())) }
                            td { (e.try_get::<String, _>("kind").unwrap_or_default()) }
                            td { code { (summary(&e.try_get::<String, _>("body").unwrap_or_default())) } }
                        }
                    }
                }
            }
        }
    };
    page(layout(
        lang,
        &format!("#{id}"),
        Some(&actor),
        &format!("/console/alerts/{id}"),
        body,
    ))
}

/// An event body in one line: its fields as `key=value`, the nested ones compact, names never
/// shown unmasked (the body holds masked names only; `name` keys are dropped anyway).
fn summary(body: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(m)) => m
            .iter()
            .filter(|(k, v)| !v.is_null() && k.as_str() != "v" && !k.contains("name"))
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect::<Vec<_>>()
            .join(" · "),
        _ => body.chars().take(500).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_drops_names_and_nulls() {
        let s = summary(r#"{"v":1,"by":"S009","note":null,"resident_name":"张*","step":2}"#);
        assert_eq!(s, "by=S009 · step=2");
        assert_eq!(summary("not json"), "not json");
    }
}
