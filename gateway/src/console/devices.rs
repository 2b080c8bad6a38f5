//! Devices: every registered device with its last heartbeat, battery and signal; online means a
//! message within `supervision.missed_heartbeats` heartbeat intervals (the rule the offline
//! alert uses); filters for offline and low battery (below `supervision.low_battery_pct`).

use super::nav::Page;
use super::{bad_query, field, layout, local_time, page, refused, unavailable, Lang};
use crate::auth::Actor;
use crate::http::Api;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use maud::html;
use serde::Deserialize;
use sqlx::Row;
use std::collections::HashMap;

/// A device as the pages show it.
pub(super) struct DeviceRow {
    pub id: String,
    pub kind: &'static str,
    pub link: &'static str,
    pub resident_id: Option<String>,
    pub location: Option<String>,
    pub last_seen: Option<String>,
    pub battery_pct: Option<i64>,
    pub rssi: Option<i64>,
    pub online: bool,
    pub low_battery: bool,
}

/// Every registered device (optionally only `resident`'s), by id.
pub(super) async fn device_rows(
    api: &Api,
    resident: Option<&str>,
) -> Result<Vec<DeviceRow>, sqlx::Error> {
    let status: HashMap<String, (String, Option<i64>, Option<i64>)> =
        sqlx::query("SELECT device_id, last_seen, battery_pct, rssi FROM device_status")
            .fetch_all(api.journal.readers())
            .await?
            .iter()
            .map(|r| {
                Ok((
                    r.try_get::<String, _>(0)?,
                    (r.try_get(1)?, r.try_get(2)?, r.try_get(3)?),
                ))
            })
            .collect::<Result<_, sqlx::Error>>()?;
    let now = jiff::Timestamp::now();
    let sup = &api.registry.supervision;
    Ok(api
        .registry
        .devices
        .values()
        .filter(|d| resident.is_none() || d.resident_id.as_deref() == resident)
        .map(|d| {
            let s = status.get(&d.id);
            let last_seen = s.map(|s| s.0.clone());
            let window = i64::from(d.heartbeat_s).saturating_mul(i64::from(sup.missed_heartbeats));
            let online = last_seen
                .as_deref()
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .is_some_and(|t| now.as_second().saturating_sub(t.as_second()) <= window);
            let battery_pct = s.and_then(|s| s.1);
            DeviceRow {
                id: d.id.clone(),
                kind: d.kind.as_str(),
                link: d.link.as_str(),
                resident_id: d.resident_id.clone(),
                location: d.location.clone(),
                last_seen,
                battery_pct,
                rssi: s.and_then(|s| s.2),
                online,
                low_battery: battery_pct.is_some_and(|b| b < i64::from(sup.low_battery_pct)),
            }
        })
        .collect())
}

/// Query of the page.
#[derive(Deserialize)]
pub(super) struct DevicesQuery {
    /// `offline`, `low_battery`, or all.
    show: Option<String>,
    /// Part of a device id, resident id or location.
    q: Option<String>,
}

pub(super) fn kind_label(lang: Lang, kind: &str) -> &'static str {
    match kind {
        "alarm_button" => lang.t("呼叫按钮", "alarm button"),
        "card_reader" => lang.t("读卡器", "card reader"),
        "health_kiosk" => lang.t("健康小屋", "health kiosk"),
        _ => lang.t("设备", "device"),
    }
}

/// The device table (also on a resident's page).
pub(super) fn table(lang: Lang, api: &Api, rows: &[&DeviceRow]) -> maud::Markup {
    html! {
        div.scroll {
            table.devices {
                thead { tr {
                    th { (lang.t("设备", "Device")) } th { (lang.t("状态", "State")) }
                    th { (lang.t("最后上报", "Last seen")) } th.num { (lang.t("电量 / 信号", "Battery / signal")) }
                    th { (lang.t("老人 / 位置", "Resident / place")) }
                } }
                tbody {
                    @for d in rows {
                        tr data-device=(d.id) {
                            td { (d.id) br; span.muted { (kind_label(lang, d.kind)) " · " (d.link) } }
                            td { @if d.online { span.ok { (lang.t("在线", "online")) } } @else { span.bad { (lang.t("离线", "offline")) } } }
                            td { @match &d.last_seen { Some(t) => (local_time(&api.registry, t)), None => span.muted { (lang.t("从未", "never")) } } }
                            td.num { @match d.battery_pct { Some(b) => span class=(if d.low_battery { "bad" } else { "" }) { (b) "%" }, None => "—" }
                                @if let Some(r) = d.rssi { br; span.muted { (r) " dBm" } } }
                            td { @if let Some(r) = &d.resident_id { a href={ "/console/residents/" (r) } { (r) } " " }
                                (d.location.as_deref().unwrap_or("")) }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /console/devices?show=offline|low_battery&q=…`
pub(super) async fn show(
    State(api): State<Api>,
    actor: Actor,
    headers: HeaderMap,
    Query(q): Query<DevicesQuery>,
) -> Response {
    let lang = Lang::of(&headers);
    if let Some(r) = refused(lang, &actor, Page::Devices) {
        return r;
    }
    let show = match field(&q.show, "show", 16) {
        Ok(None) => None,
        Ok(Some(s)) if s == "offline" || s == "low_battery" => Some(s.to_string()),
        Ok(Some(s)) => {
            return bad_query(lang, &actor, &format!("show={s:?}: offline or low_battery"))
        }
        Err(m) => return bad_query(lang, &actor, &m),
    };
    let needle = match field(&q.q, "q", 64) {
        Ok(n) => n.map(str::to_lowercase),
        Err(m) => return bad_query(lang, &actor, &m),
    };
    let all = match device_rows(&api, None).await {
        Ok(r) => r,
        Err(e) => return unavailable(e),
    };
    let offline = all.iter().filter(|d| !d.online).count();
    let low = all.iter().filter(|d| d.low_battery).count();
    let shown: Vec<&DeviceRow> = all
        .iter()
        .filter(|d| match show.as_deref() {
            Some("offline") => !d.online,
            Some("low_battery") => d.low_battery,
            _ => true,
        })
        .filter(|d| {
            needle.as_deref().is_none_or(|n| {
                d.id.to_lowercase().contains(n)
                    || d.resident_id
                        .as_deref()
                        .is_some_and(|r| r.to_lowercase().contains(n))
                    || d.location
                        .as_deref()
                        .is_some_and(|l| l.to_lowercase().contains(n))
            })
        })
        .collect();
    let body = html! {
        h2 { (lang.t("设备", "Devices")) }
        p.meta { (all.len()) (lang.t(" 台 · ", " devices · ")) span.bad { (offline) (lang.t(" 台离线", " offline")) }
            " · " (low) (lang.t(" 台电量低", " low battery")) }
        form.filters method="get" action="/console/devices" {
            label { (lang.t("显示", "Show"))
                select name="show" {
                    option value="" { (lang.t("全部", "all")) }
                    option value="offline" selected[show.as_deref() == Some("offline")] { (lang.t("离线", "offline")) }
                    option value="low_battery" selected[show.as_deref() == Some("low_battery")] { (lang.t("电量低", "low battery")) }
                }
            }
            label { (lang.t("设备 / 老人 / 位置", "Device / resident / place")) input name="q" value=(q.q.clone().unwrap_or_default()) maxlength="64"; }
            button type="submit" { (lang.t("筛选", "Filter")) }
        }
        (table(lang, &api, &shown))
    };
    page(layout(
        lang,
        lang.t("设备", "Devices"),
        Some(&actor),
        "/console/devices",
        body,
    ))
}
