//! The alert board: open alerts by priority and age, live.
//!
//! The rows are rendered here only (one code path): the page's script listens to
//! `/api/alerts/stream` and, on any alert change, on a `resync` (the stream lagged) and on every
//! reconnect, fetches `/console/board/rows` again, so no alert is missing after a dropped
//! connection. "Since raised" ticks in the browser from `data-raised`. Sound for a new
//! high-priority alert plays only after the staff member clicked "enable sound" (browsers
//! require a gesture). Acknowledge / resolve post to the JSON API with the CSRF token; a role that
//! may not act on alerts gets no buttons (and the API refuses it anyway, 403).

use super::{layout, page, Lang};
use crate::alerting::alert_from_row;
use crate::auth::Actor;
use crate::http::Api;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use eldergate_protocol::payload::{AlertState, Priority, StaffAlert};
use maud::{html, Markup};

async fn open_alerts(api: &Api) -> Result<Vec<StaffAlert>, String> {
    let rows =
        sqlx::query("SELECT * FROM alerts WHERE state IN ('raised','acknowledged') ORDER BY id")
            .fetch_all(api.journal.readers())
            .await
            .map_err(|e| e.to_string())?;
    let mut alerts = rows
        .iter()
        .map(|r| alert_from_row(r, &api.registry).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let rank = |p: Priority| match p {
        Priority::High => 0,
        Priority::Medium => 1,
        Priority::Low => 2,
    };
    // Priority first, then the oldest first; unacknowledged before acknowledged.
    alerts.sort_by(|a, b| {
        (
            rank(a.priority),
            a.state != AlertState::Raised,
            &a.raised_at,
        )
            .cmp(&(
                rank(b.priority),
                b.state != AlertState::Raised,
                &b.raised_at,
            ))
    });
    Ok(alerts)
}

fn priority_class(p: Priority) -> &'static str {
    match p {
        Priority::High => "high",
        Priority::Medium => "medium",
        Priority::Low => "low",
    }
}

pub(super) fn kind_label(lang: Lang, kind: &str) -> String {
    let zh = match kind {
        "sos" => "紧急呼叫",
        "device_offline" => "设备离线",
        "low_battery" => "电量低",
        "missed_checkin" => "未报平安（敲门）",
        "disk_low" => "网关磁盘不足",
        other => other,
    };
    match lang {
        Lang::Zh => zh.to_string(),
        Lang::En => kind.replace('_', " "),
    }
}

fn rows_markup(lang: Lang, actor: &Actor, alerts: &[StaffAlert]) -> Markup {
    let may_act = actor.role.may_act_on_alerts();
    html! {
        @if alerts.is_empty() {
            p.empty { (lang.t("没有未处理的告警", "No open alerts")) }
        }
        @for a in alerts {
            article.card.(priority_class(a.priority)) data-id=(a.alert_id) data-priority=(priority_class(a.priority)) {
                h3 { "#" (a.alert_id) " " (kind_label(lang, &a.kind)) }
                div.meta {
                    (a.resident_name.as_deref().unwrap_or("")) " "
                    (a.resident_id.as_deref().unwrap_or("")) " · "
                    (a.location.as_deref().unwrap_or(&a.device_id))
                    @if let Some(d) = &a.detail { " · " (d) }
                }
                div.meta {
                    (lang.t("已过 ", "raised ")) span.since data-raised=(a.raised_at) { "…" }
                    (lang.t("", " ago")) " · " (lang.t("升级第 ", "ladder step ")) (a.step + 1) (lang.t(" 级", ""))
                    " · " (lang.t("已通知 ", "notified ")) (a.notify.join(", "))
                    @if a.press_count > 1 { " · " (a.press_count) (lang.t(" 次按键", " presses")) }
                }
                @if let Some(ack) = &a.acknowledged {
                    div.meta { (lang.t("已确认：", "Acknowledged by ")) (ack.by) " " (ack.at)
                        @if let Some(n) = &ack.note { " — " (n) } }
                }
                @if may_act {
                    form.actions data-alert=(a.alert_id) {
                        input name="note" placeholder=(lang.t("备注（可选）", "Note (optional)")) maxlength="500";
                        @if a.state == AlertState::Raised {
                            button.ack type="submit" value="ack" { (lang.t("确认", "Acknowledge")) }
                        }
                        button.resolve type="submit" value="resolve" { (lang.t("已处理", "Resolve")) }
                    }
                } @else {
                    div.meta { (lang.t("只读：你的角色不能处理告警", "Read-only: your role does not act on alerts")) }
                }
            }
        }
    }
}

/// `GET /console`: the board.
pub(super) async fn board_page(
    State(api): State<Api>,
    actor: Actor,
    headers: HeaderMap,
) -> Response {
    let lang = Lang::of(&headers);
    let alerts = match open_alerts(&api).await {
        Ok(a) => a,
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, e).into_response(),
    };
    let body = html! {
        div.bar {
            h2 { (lang.t("告警看板", "Alert board")) }
            span.live #live { (lang.t("连接中…", "connecting…")) }
            button #sound type="button" { (lang.t("开启提示音", "Enable sound")) }
        }
        div.status #status role="status" {}
        section #rows data-lang=(if lang == Lang::En { "en" } else { "zh" }) { (rows_markup(lang, &actor, &alerts)) }
        script src="/console/static/board.js" {}
    };
    page(layout(
        lang,
        lang.t("告警看板", "Alert board"),
        Some(&actor),
        "/console",
        body,
    ))
}

/// `GET /console/board/rows`: the rows alone, for the script.
pub(super) async fn rows(State(api): State<Api>, actor: Actor, headers: HeaderMap) -> Response {
    let lang = Lang::of(&headers);
    match open_alerts(&api).await {
        Ok(a) => (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            rows_markup(lang, &actor, &a).into_string(),
        )
            .into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e).into_response(),
    }
}

pub(super) async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        BOARD_JS,
    )
        .into_response()
}

const BOARD_JS: &str = r#"(() => {
'use strict';
const rows = document.getElementById('rows');
const live = document.getElementById('live');
const status = document.getElementById('status');
const en = rows.dataset.lang === 'en';
const csrf = document.querySelector('meta[name=csrf-token]').content;
let audio = null, timer = null, everOpen = false;
function since(iso) {
  const s = Math.max(0, Math.floor((Date.now() - Date.parse(iso)) / 1000));
  const h = Math.floor(s / 3600), m = Math.floor(s % 3600 / 60), r = s % 60;
  return (h ? h + (en ? 'h ' : '小时') : '') + (h || m ? m + (en ? 'm ' : '分') : '') + r + (en ? 's' : '秒');
}
function tick() { document.querySelectorAll('[data-raised]').forEach(e => { e.textContent = since(e.dataset.raised); }); }
async function refresh() {
  try {
    const r = await fetch('/console/board/rows', { credentials: 'same-origin' });
    if (r.status === 401 || r.redirected) { location.href = '/console/login'; return; }
    if (r.ok) { rows.innerHTML = await r.text(); tick(); document.body.dataset.synced = String(Date.now()); }
  } catch (e) { live.textContent = en ? 'offline' : '已断开'; }
}
function soon() { clearTimeout(timer); timer = setTimeout(refresh, 50); }
function beep() {
  if (!audio) return;
  const o = audio.createOscillator(), g = audio.createGain();
  o.frequency.value = 880; g.gain.value = 0.3; o.connect(g); g.connect(audio.destination);
  o.start(); o.stop(audio.currentTime + 0.6);
}
document.getElementById('sound').addEventListener('click', ev => {
  audio = audio || new (window.AudioContext || window.webkitAudioContext)();
  audio.resume(); beep(); ev.target.textContent = en ? 'sound on' : '提示音已开启';
});
const es = new EventSource('/api/alerts/stream');
es.addEventListener('open', () => { live.textContent = en ? 'live' : '实时'; if (everOpen) soon(); everOpen = true; });
es.addEventListener('error', () => { live.textContent = en ? 'reconnecting…' : '重新连接中…'; });
es.addEventListener('resync', soon);
es.addEventListener('alert', ev => {
  soon();
  try { const a = JSON.parse(ev.data); if (a.change === 'raised' && a.priority === 'high') beep(); } catch (e) {}
});
rows.addEventListener('submit', async ev => {
  ev.preventDefault();
  const form = ev.target, verb = (ev.submitter && ev.submitter.value) || 'ack';
  const note = form.elements.note.value.trim();
  form.querySelectorAll('button').forEach(b => { b.disabled = true; });
  try {
    const r = await fetch('/api/alerts/' + form.dataset.alert + '/' + verb, {
      method: 'POST', credentials: 'same-origin',
      headers: { 'content-type': 'application/json', 'x-csrf-token': csrf },
      body: JSON.stringify(note ? { note } : {}) });
    const body = await r.json().catch(() => ({}));
    status.textContent = r.ok ? '' : (body.error || r.status);
  } catch (e) { status.textContent = en ? 'not sent: no connection' : '未发送：网络断开'; }
  refresh();
});
setInterval(tick, 1000); tick();
})();
"#;
