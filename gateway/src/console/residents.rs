//! Residents: search by name, id, room or card; one resident's page with their devices, alerts,
//! meals, balance and ledger. The ledger and the balance come from the canteen's own statement
//! (`canteen::statement`), never summed here.
//!
//! Health readings: [`vitals_section`] lists the resident's readings of the last 30 days from the
//! health domain (`vitals::query::history`), newest first, with what the rules found.

use super::nav::Page;
use super::{bad_query, field, layout, local_time, page, refused, unavailable, yuan, Lang};
use crate::auth::Actor;
use crate::canteen::statement::{self, MealFilter};
use crate::community::Resident;
use crate::http::Api;
use crate::roster::card_key;
use crate::vitals::query::ReadingView;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use maud::{html, Markup};
use serde::Deserialize;
use sqlx::Row;

/// Most residents a search lists.
pub const MAX_FOUND: usize = 100;

/// Residents matching `q`: a card (bound in the journal or on the roster), a resident id, part of
/// a name, or a room (`building unit room` as written on the roster). Roster order.
pub(super) async fn find(api: &Api, q: &str) -> Result<Vec<Resident>, sqlx::Error> {
    let roster = api.registry.residents.current();
    let needle = q.trim().to_lowercase();
    let card = card_key(q);
    let mut ids = std::collections::BTreeSet::new();
    // A card UID: at least 4 hex digits and nothing else but separators.
    if card.len() >= 4
        && q.chars()
            .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '-' || c == ' ')
    {
        for r in sqlx::query("SELECT resident_id FROM cards WHERE card_id = ?")
            .bind(&card)
            .fetch_all(api.journal.readers())
            .await?
        {
            ids.insert(r.try_get::<String, _>(0)?);
        }
    }
    let mut found: Vec<Resident> = roster
        .values()
        .filter(|r| {
            ids.contains(&r.resident_id)
                || r.resident_id.to_lowercase() == needle
                || r.resident_id.to_lowercase().contains(&needle)
                || r.name.to_lowercase().contains(&needle)
                || r.card_id
                    .as_deref()
                    .is_some_and(|c| card_key(c) == card && !card.is_empty())
                || room_of(r).to_lowercase().contains(&needle)
                    && r.room.as_deref().is_some_and(|x| !x.is_empty())
        })
        .take(MAX_FOUND)
        .cloned()
        .collect();
    // An exact id or card first.
    found
        .sort_by_key(|r| !(ids.contains(&r.resident_id) || r.resident_id.to_lowercase() == needle));
    Ok(found)
}

/// `building unit room`.
pub(super) fn room_of(r: &Resident) -> String {
    [&r.building, &r.unit, &r.room]
        .iter()
        .filter_map(|x| x.as_deref())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Query of the search.
#[derive(Deserialize)]
pub(super) struct SearchQuery {
    q: Option<String>,
}

/// `GET /console/residents?q=…`
pub(super) async fn search(
    State(api): State<Api>,
    actor: Actor,
    headers: HeaderMap,
    Query(s): Query<SearchQuery>,
) -> Response {
    let lang = Lang::of(&headers);
    if let Some(r) = refused(lang, &actor, Page::Residents) {
        return r;
    }
    let q = match field(&s.q, "q", 64) {
        Ok(q) => q,
        Err(m) => return bad_query(lang, &actor, &m),
    };
    let found = match q {
        Some(q) => match find(&api, q).await {
            Ok(f) => Some(f),
            Err(e) => return unavailable(e),
        },
        None => None,
    };
    let body = html! {
        h2 { (lang.t("老人", "Residents")) }
        form.filters method="get" action="/console/residents" {
            label { (lang.t("姓名、编号、房号或卡号", "Name, id, room or card"))
                input name="q" type="search" value=(q.unwrap_or("")) maxlength="64" autofocus; }
            button type="submit" { (lang.t("查找", "Search")) }
        }
        @if let Some(found) = &found {
            p.meta { (found.len()) (lang.t(" 位", " found"))
                @if found.len() >= MAX_FOUND { " · " (lang.t("请缩小范围", "narrow the search")) } }
            @for r in found { (resident_card(lang, r, "/console/residents/")) }
        } @else {
            p.meta { (api.registry.residents.current().len()) (lang.t(" 位老人在册", " residents on the roster")) }
        }
    };
    page(layout(
        lang,
        lang.t("老人", "Residents"),
        Some(&actor),
        "/console/residents",
        body,
    ))
}

/// One resident as a search result, linking to `link` + id.
pub(super) fn resident_card(lang: Lang, r: &Resident, link: &str) -> Markup {
    html! {
        a.card.resident href={ (link) (r.resident_id) } style="display:block;color:inherit;text-decoration:none" {
            strong { (r.name) } " " (r.resident_id)
            div.meta { (room_of(r))
                @if let Some(g) = &r.grid { " · " (lang.t("网格 ", "grid ")) (g) }
                @if let Some(c) = &r.card_id { " · " (lang.t("卡 ", "card ")) (c) } }
        }
    }
}

/// Most readings the resident's page lists (the newest of the last [`VITALS_DAYS`] days).
pub const MAX_VITALS: usize = 30;
/// How far back the resident's page looks for readings.
pub const VITALS_DAYS: i64 = 30;

/// The resident's readings of the last [`VITALS_DAYS`] days, newest first, at most [`MAX_VITALS`].
pub(super) async fn recent_readings(
    api: &Api,
    resident: &str,
) -> Result<Vec<ReadingView>, sqlx::Error> {
    let now = jiff::Timestamp::now();
    let from = now
        .checked_sub(jiff::SignedDuration::from_hours(24 * VITALS_DAYS))
        .unwrap_or(now);
    let mut rows = crate::vitals::query::history(
        api.journal.readers(),
        resident,
        &crate::journal::format_ts(from),
        "9999-12-31T00:00:00.000Z",
        5000,
    )
    .await?;
    rows.reverse();
    rows.truncate(MAX_VITALS);
    Ok(rows)
}

fn measure_label(lang: Lang, measure: &str) -> &'static str {
    match measure {
        "blood_pressure" => lang.t("血压", "Blood pressure"),
        "glucose" => lang.t("血糖", "Glucose"),
        "spo2" => lang.t("血氧", "SpO2"),
        "temperature" => lang.t("体温", "Temperature"),
        "weight" => lang.t("体重", "Weight"),
        "pulse" => lang.t("脉搏", "Pulse"),
        _ => lang.t("其他", "Other"),
    }
}

/// The health readings of a resident (newest first) with what the rules found; a finding that
/// raised an alert links to it.
pub(super) fn vitals_section(lang: Lang, api: &Api, readings: &[ReadingView]) -> Markup {
    html! {
        section #vitals {
            h3 { (lang.t("健康数据（近 30 天）", "Health readings (last 30 days)")) }
            @if readings.is_empty() { p.muted { (lang.t("无", "None")) } } @else {
                div.scroll {
                    table #readings {
                        thead { tr { th { (lang.t("时间", "Time")) } th { (lang.t("项目", "Measure")) }
                            th.num { (lang.t("数值", "Value")) } th { (lang.t("说明", "Notes")) } } }
                        tbody {
                            @for r in readings {
                                @let findings = r.findings.as_array().cloned().unwrap_or_default();
                                tr data-reading=(r.id) {
                                    td { (local_time(&api.registry, &r.received_at)) }
                                    td { (measure_label(lang, &r.measure)) }
                                    td.num class=(if findings.is_empty() { "ok" } else { "bad" }) { (r.value) " " span.muted { (r.unit) } }
                                    td {
                                        @if let Some(c) = &r.context { (c) " " }
                                        @for f in &findings {
                                            @let kind = f.get("kind").and_then(|k| k.as_str()).unwrap_or("");
                                            @let prio = f.get("priority").and_then(|k| k.as_str()).unwrap_or("");
                                            @match f.get("alert_id").and_then(|a| a.as_i64()) {
                                                Some(aid) => { a href={ "/console/alerts/" (aid) } { (kind) " (" (prio) ")" } " " }
                                                None => { span { (kind) " (" (prio) ") " } }
                                            }
                                        }
                                        @if r.how != "session" && r.how != "named" { span.muted { (r.how) } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The ledger's last lines, newest first, with running balances.
pub(super) fn ledger_table(lang: Lang, api: &Api, s: &statement::Statement) -> Markup {
    html! {
        div.scroll {
            table #ledger {
                thead { tr { th { (lang.t("时间", "Time")) } th { (lang.t("类型", "Kind")) } th.num { (lang.t("金额", "Amount")) }
                    th.num { (lang.t("余额", "Balance")) } th { (lang.t("经办 / 说明", "By / note")) } } }
                tbody {
                    @for l in s.lines.iter().rev() {
                        tr data-ledger=(l.ledger_id) {
                            td { (local_time(&api.registry, &l.at)) }
                            td { (ledger_kind(lang, &l.kind)) @if let Some(m) = &l.meal { " " span.muted { (m) } } }
                            td.num class=(if l.amount_fen < 0 { "bad" } else { "ok" }) { (yuan(l.amount_fen)) }
                            td.num { (yuan(l.balance_fen)) }
                            td { (l.staff_id.as_deref().unwrap_or("")) @if let Some(m) = &l.method { " · " (m) }
                                @if let Some(r) = &l.reason { " · " (r) } }
                        }
                    }
                }
            }
        }
    }
}

fn ledger_kind(lang: Lang, kind: &str) -> String {
    let zh = match kind {
        "topup" => "充值",
        "charge" => "用餐",
        "refund" => "退款（作废）",
        "payout" => "退余额",
        other => other,
    };
    lang.t(zh, kind).to_string()
}

/// A resident's meals, newest first; `void` adds a void form to each meal not yet voided.
pub(super) fn meals_table(
    lang: Lang,
    api: &Api,
    meals: &[statement::MealLine],
    void: bool,
) -> Markup {
    html! {
        div.scroll {
            table.meals {
                thead { tr { th { (lang.t("时间", "Time")) } th { (lang.t("老人", "Resident")) } th.num { (lang.t("价格 / 补贴 / 实付", "Price / subsidy / paid")) } th {} } }
                tbody {
                    @for m in meals {
                        tr data-meal=(m.meal_id) {
                            td { (local_time(&api.registry, &m.at)) br; span.muted { "#" (m.meal_id) " " (m.period) } }
                            td { (m.name.as_deref().unwrap_or("")) " " (m.resident_id) }
                            td.num { (yuan(m.price_fen)) " / " (yuan(m.subsidy_fen)) " / " (yuan(m.payable_fen)) }
                            td {
                                @if let Some(by) = &m.voided_by {
                                    span.bad.voided { (lang.t("已作废 ", "voided ")) (by) @if let Some(r) = &m.void_reason { " · " (r) } }
                                } @else if void {
                                    form.act.void data-api={ "/api/meals/" (m.meal_id) "/void" } data-done=(lang.t("餐已作废，已退款", "Meal voided and refunded")) {
                                        input name="reason" required maxlength="200" placeholder=(lang.t("作废原因", "Reason"));
                                        button type="submit" { (lang.t("作废", "Void")) }
                                        span.status {}
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /console/residents/{id}`
/// Whether the resident is reported away or in hospital now, and the form that changes it: any
/// staff member may report a resident away / in hospital or back (docs/CANTEEN.md); a card
/// tapped meanwhile is flagged on the day report, never refused.
pub(super) async fn away_section(lang: Lang, api: &Api, id: &str) -> Result<Markup, sqlx::Error> {
    let open = sqlx::query(
        "SELECT kind, note, set_by, set_at FROM resident_away WHERE resident_id = ? AND ended_at IS NULL ORDER BY id DESC LIMIT 1",
    )
    .bind(id)
    .fetch_optional(api.journal.readers())
    .await?;
    let kind_label = |k: &str| match k {
        "hospital" => lang.t("住院", "in hospital"),
        _ => lang.t("外出", "away"),
    };
    Ok(match open {
        Some(row) => {
            let kind: String = row.try_get(0)?;
            let note: Option<String> = row.try_get(1)?;
            let by: String = row.try_get(2)?;
            let at: String = row.try_get(3)?;
            html! {
                div.away.bad { (lang.t("现在：", "Now: ")) (kind_label(&kind))
                    " · " (lang.t("登记 ", "reported ")) (local_time(&api.registry, &at)) " · " (by)
                    @if let Some(n) = &note { " · " (n) } }
                form.act.back data-api={ "/api/residents/" (id) "/back" } data-done=(lang.t("已登记回来", "Reported back")) {
                    button type="submit" { (lang.t("已回来", "Back now")) }
                    span.status {}
                }
            }
        }
        None => html! {
            form.act.away data-api={ "/api/residents/" (id) "/away" } data-done=(lang.t("已登记外出", "Reported away")) {
                select name="kind" required {
                    option value="away" { (lang.t("外出", "Away")) }
                    option value="hospital" { (lang.t("住院", "In hospital")) }
                }
                input name="reason" maxlength="200" placeholder=(lang.t("说明（可选，如 人民医院 3F）", "Note (optional, e.g. the hospital)"));
                button type="submit" { (lang.t("登记外出/住院", "Report away")) }
                span.status {}
            }
        },
    })
}

pub(super) async fn resident(
    State(api): State<Api>,
    actor: Actor,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let lang = Lang::of(&headers);
    if let Some(r) = refused(lang, &actor, Page::Residents) {
        return r;
    }
    if id.chars().count() > 64 {
        return bad_query(lang, &actor, "a resident id has at most 64 characters");
    }
    let pool = api.journal.readers();
    let r = api.registry.residents.get(&id);
    let st = match statement::statement(pool, &api.registry, &id, 30).await {
        Ok(s) => s,
        Err(e) => return unavailable(e),
    };
    if r.is_none() && st.is_none() {
        return super::refusal(
            lang,
            &actor,
            StatusCode::NOT_FOUND,
            &format!(
                "{} {id}",
                lang.t("名册上没有这位老人：", "Not on the roster:")
            ),
        );
    }
    let meals = match statement::meals(
        pool,
        &api.registry,
        &MealFilter {
            date: None,
            resident: Some(id.clone()),
            card: None,
            limit: 20,
        },
    )
    .await
    {
        Ok(m) => m,
        Err(e) => return unavailable(e),
    };
    let devices = match super::devices::device_rows(&api, Some(&id)).await {
        Ok(d) => d,
        Err(e) => return unavailable(e),
    };
    let sees_alerts = Page::History.visible_to(actor.role);
    let alerts = if sees_alerts {
        match sqlx::query(
            "SELECT id, kind, state, raised_at, acked_by FROM alerts WHERE resident_id = ? ORDER BY id DESC LIMIT 20",
        )
        .bind(&id)
        .fetch_all(pool)
        .await
        {
            Ok(rows) => rows,
            Err(e) => return unavailable(e),
        }
    } else {
        Vec::new()
    };
    let readings = match recent_readings(&api, &id).await {
        Ok(rows) => rows,
        Err(e) => return unavailable(e),
    };
    let cards = match sqlx::query(
        "SELECT card_id, state, changed_at FROM cards WHERE resident_id = ? ORDER BY changed_at DESC",
    )
    .bind(&id)
    .fetch_all(pool)
    .await
    {
        Ok(rows) => rows,
        Err(e) => return unavailable(e),
    };
    let away = match away_section(lang, &api, &id).await {
        Ok(m) => m,
        Err(e) => return unavailable(e),
    };
    let name = r
        .as_ref()
        .map(|r| r.name.clone())
        .or_else(|| st.as_ref().and_then(|s| s.name.clone()))
        .unwrap_or_default();
    let grid_worker = r.as_ref().and_then(|r| r.grid.as_deref()).and_then(|g| {
        api.registry
            .staff
            .values()
            .find(|s| s.role == "grid_worker" && s.grid.as_deref() == Some(g))
            .map(|s| s.id.clone())
    });
    let device_refs: Vec<_> = devices.iter().collect();
    let body = html! {
        h2 { (name) " " span.muted { (id) } }
        div.card {
            @match &r {
                Some(r) => {
                    div.meta { (room_of(r)) @if let Some(g) = &r.grid { " · " (lang.t("网格 ", "grid ")) (g) }
                        @if let Some(w) = &grid_worker { " · " (lang.t("网格员 ", "grid worker ")) (w) } }
                    div.meta { @if let Some(b) = &r.birth_date { (lang.t("出生 ", "born ")) (b) }
                        @if let Some(s) = &r.statuses { " · " (s) } }
                },
                None => div.meta.bad { (lang.t("已不在名册上", "No longer on the roster")) },
            }
            div.meta { (lang.t("卡：", "Cards: "))
                @for c in &cards { (c.try_get::<String, _>(0).unwrap_or_default()) " (" (c.try_get::<String, _>(1).unwrap_or_default()) ") " }
                @if cards.is_empty() { (lang.t("无", "none")) } }
            div { (lang.t("余额 ", "Balance ")) span.big #balance { "¥" (yuan(st.as_ref().map(|s| s.balance_fen).unwrap_or(0))) } }
            @if r.is_some() { (away) }
            @if Page::Canteen.visible_to(actor.role) {
                div.actions { a.button href={ "/console/canteen?resident=" (id) } { (lang.t("到食堂柜台办理", "Open at the canteen counter")) } }
            }
        }
        h3 { (lang.t("设备", "Devices")) }
        @if devices.is_empty() { p.muted { (lang.t("无", "None")) } } @else { (super::devices::table(lang, &api, &device_refs)) }
        @if sees_alerts {
            h3 { (lang.t("告警", "Alerts")) }
            @if alerts.is_empty() { p.muted { (lang.t("无", "None")) } }
            ul {
                @for a in &alerts {
                    @let aid = a.try_get::<i64, _>("id").unwrap_or_default();
                    li { a href={ "/console/alerts/" (aid) } { "#" (aid) " " (super::kind_label(lang, &a.try_get::<String, _>("kind").unwrap_or_default())) }
                        " · " (local_time(&api.registry, &a.try_get::<String, _>("raised_at").unwrap_or_default()))
                        " · " (a.try_get::<String, _>("state").unwrap_or_default())
                        @if let Ok(Some(by)) = a.try_get::<Option<String>, _>("acked_by") { " · " (by) } }
                }
            }
        }
        (vitals_section(lang, &api, &readings))
        h3 { (lang.t("用餐", "Meals")) }
        @if meals.is_empty() { p.muted { (lang.t("无", "None")) } } @else { (meals_table(lang, &api, &meals, false)) }
        h3 { (lang.t("账目", "Ledger")) }
        @match &st { Some(s) if !s.lines.is_empty() => (ledger_table(lang, &api, s)), _ => p.muted { (lang.t("无", "None")) } }
        script src="/console/static/pages.js" {}
    };
    page(layout(
        lang,
        &name,
        Some(&actor),
        &format!("/console/residents/{id}"),
        body,
    ))
}
