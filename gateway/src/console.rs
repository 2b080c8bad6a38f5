//! The staff console: server-rendered pages (maud, checked at compile time), Simplified Chinese
//! by default with an English switch, phone-first (usable at 360 px, large touch targets), no
//! front-end build: one small hand-written script per page, served from the binary.
//!
//! Every page is behind the auth layer (`auth.rs`) except the login page, invites and static
//! files. Pages only read; every change goes through the JSON API with the session's CSRF token
//! (the board's script, and `pages.js` for every other page's `form[data-api]`), so the page and
//! the API refuse the same things for the same reasons (roles are checked in the domain
//! operations) and no money or alert rule has a second copy here. Each page also checks the
//! role server-side before it renders (`nav::Page::visible_to`): a role that may not see a page
//! gets 403, whatever link it followed.

use crate::auth::{Actor, Via};
use crate::http::Api;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use maud::{html, Markup, PreEscaped, DOCTYPE};

mod board;
mod counter;
mod devices;
mod history;
mod login;
pub mod nav;
mod overview;
mod residents;
mod visits;

/// The console's routes (merged into the API router, under its auth layer).
pub fn routes() -> Router<Api> {
    Router::new()
        .route("/console", get(board::board_page))
        .route("/console/board/rows", get(board::rows))
        .route("/console/static/board.js", get(board::script))
        .route("/console/static/console.css", get(stylesheet))
        .route("/console/static/pages.js", get(pages_script))
        .route("/console/history", get(history::show))
        .route("/console/history.csv", get(history::csv_export))
        .route("/console/alerts/{id}", get(history::detail))
        .route("/console/visits", get(visits::show))
        .route("/console/residents", get(residents::search))
        .route("/console/residents/{id}", get(residents::resident))
        .route("/console/devices", get(devices::show))
        .route("/console/canteen", get(counter::show))
        .route("/console/overview", get(overview::show))
        .route("/console/login", get(login::form).post(login::submit))
        .route("/console/logout", axum::routing::post(login::logout))
        .route("/console/lang", get(login::switch_language))
        .route(
            "/console/invite/{secret}",
            get(login::invite_form).post(login::invite_submit),
        )
}

/// The page language: `eg_lang=en` cookie, else Simplified Chinese.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// 简体中文 (default).
    Zh,
    /// English.
    En,
}

impl Lang {
    /// From the request's cookie.
    pub fn of(headers: &HeaderMap) -> Lang {
        match crate::auth::layer::cookie(headers, "eg_lang") {
            Some("en") => Lang::En,
            _ => Lang::Zh,
        }
    }

    /// Picks the text in this language.
    pub fn t<'a>(self, zh: &'a str, en: &'a str) -> &'a str {
        match self {
            Lang::Zh => zh,
            Lang::En => en,
        }
    }

    fn code(self) -> &'static str {
        match self {
            Lang::Zh => "zh-CN",
            Lang::En => "en",
        }
    }
}

/// The common page frame: header with the staff member and logout, the language switch.
pub fn layout(lang: Lang, title: &str, actor: Option<&Actor>, here: &str, body: Markup) -> Markup {
    let csrf = match actor.map(|a| &a.via) {
        Some(Via::Session { csrf }) => csrf.as_str(),
        _ => "",
    };
    let other = match lang {
        Lang::Zh => ("en", "English"),
        Lang::En => ("zh", "中文"),
    };
    html! {
        (DOCTYPE)
        html lang=(lang.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="csrf-token" content=(csrf);
                title { (title) " · eldergate" }
                link rel="stylesheet" href="/console/static/console.css";
            }
            body {
                header.top {
                    strong { (lang.t("社区养老 · 值班台", "Community care · console")) }
                    nav {
                        a href={ "/console/lang?to=" (other.0) "&back=" (here) } { (other.1) }
                        @if let Some(a) = actor {
                            span.who { (a.staff_id) " · " (a.role.as_str()) }
                            form method="post" action="/console/logout" {
                                input type="hidden" name="csrf" value=(csrf);
                                button type="submit" { (lang.t("退出", "Log out")) }
                            }
                        }
                    }
                }
                @if let Some(a) = actor { (nav::bar(lang, a.role, here)) }
                main { (body) }
            }
        }
    }
}

/// An HTML answer.
pub fn page(markup: Markup) -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response()
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        CSS,
    )
        .into_response()
}

/// Phone first: one column, 44 px touch targets, colours by priority.
const CSS: &str = r#"
*{box-sizing:border-box}body{margin:0;font:16px/1.4 system-ui,"PingFang SC","Noto Sans CJK SC",sans-serif;background:#f4f5f7;color:#111}
header.top{display:flex;flex-wrap:wrap;justify-content:space-between;align-items:center;gap:.5em;padding:.6em .8em;background:#1d3557;color:#fff}
header.top a{color:#fff}header.top nav{display:flex;gap:.6em;align-items:center}header.top form{margin:0}
main{padding:.6em;max-width:60em;margin:auto}
button,input,select{font:inherit;min-height:44px;padding:.3em .7em;border-radius:6px;border:1px solid #888}
button{background:#fff;cursor:pointer}button.ack{background:#e63946;color:#fff;border-color:#e63946}button.resolve{background:#2a9d8f;color:#fff;border-color:#2a9d8f}
.card{background:#fff;border-radius:8px;padding:.7em;margin:.5em 0;border-left:8px solid #999;box-shadow:0 1px 2px #0002}
.card.high{border-left-color:#d00000}.card.medium{border-left-color:#f4a261}.card.low{border-left-color:#8ab17d}
.card h3{margin:0 0 .3em;font-size:1.1em}.meta{color:#444;font-size:.95em}.since{font-weight:bold}
.actions{display:flex;flex-wrap:wrap;gap:.4em;margin-top:.5em}.actions input{flex:1 1 10em}
.status{min-height:1.5em;color:#b00}.empty{color:#555;padding:1em 0}
.bar{display:flex;flex-wrap:wrap;gap:.5em;align-items:center;justify-content:space-between}
.login{max-width:22em;margin:2em auto;background:#fff;padding:1em;border-radius:8px}.login label{display:block;margin:.6em 0}.login input{width:100%}
.error{color:#b00}.live{font-size:.9em;color:#555}
nav.pages{display:flex;flex-wrap:wrap;gap:.3em;padding:.4em .6em;background:#e9edf3}
nav.pages a{display:inline-flex;align-items:center;min-height:44px;padding:0 .8em;border-radius:6px;color:#1d3557;text-decoration:none;background:#fff}
nav.pages a.here{background:#1d3557;color:#fff}
form.filters{display:flex;flex-wrap:wrap;gap:.4em;align-items:flex-end}form.filters label{display:flex;flex-direction:column;font-size:.9em;flex:1 1 9em}
form.filters input,form.filters select{width:100%}
.grid2{display:grid;grid-template-columns:repeat(auto-fit,minmax(14em,1fr));gap:.5em}
table{border-collapse:collapse;width:100%;background:#fff}th,td{text-align:left;padding:.35em;border-bottom:1px solid #ddd;font-size:.95em;vertical-align:top}
.scroll{overflow-x:auto;max-width:100%}.num{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#1b7f3a}.bad{color:#b00}.muted{color:#666}.big{font-size:1.6em;font-weight:bold}
a.button{display:inline-flex;align-items:center;min-height:44px;padding:0 .8em;border-radius:6px;border:1px solid #888;background:#fff;color:#111;text-decoration:none}
form.act{display:flex;flex-wrap:wrap;gap:.4em;align-items:center;margin:.4em 0}form.act input,form.act select{flex:1 1 8em;min-width:0}
pre{white-space:pre-wrap;word-break:break-all;font-size:.85em;background:#fff;padding:.5em}
h2{font-size:1.25em}h3{font-size:1.05em}
"#;

/// Escapes nothing: for the inline JSON the pages embed (already valid JSON, `<` escaped).
pub fn raw_json(v: &serde_json::Value) -> PreEscaped<String> {
    PreEscaped(v.to_string().replace('<', "\\u003c"))
}

async fn pages_script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        PAGES_JS,
    )
        .into_response()
}

/// The pages' one script: a `form[data-api]` posts its named fields as JSON to the API path in
/// `data-api` (a `{name}` in the path takes that field's value), with the CSRF token; a field
/// marked `data-fen` is yuan typed by a person ("12.50") sent as integer fen, converted from the
/// digits (never through a float). On success the page reloads and says what was done; on a
/// refusal the API's message is shown as is. The roster form runs a dry run first and only then
/// offers the real import.
const PAGES_JS: &str = r#"(() => {
'use strict';
const csrf = document.querySelector('meta[name=csrf-token]').content;
const en = document.documentElement.lang === 'en';
const flash = document.getElementById('status');
try { const m = sessionStorage.getItem('eg_flash'); if (m && flash) { flash.textContent = m; flash.className = 'status ok'; } sessionStorage.removeItem('eg_flash'); } catch (e) {}
function fen(v) {
  const m = /^\s*(\d{1,7})(?:\.(\d{1,2}))?\s*$/.exec(v);
  if (!m) return null;
  return parseInt(m[1], 10) * 100 + parseInt(((m[2] || '') + '00').slice(0, 2), 10);
}
async function post(url, body, type) {
  return fetch(url, { method: 'POST', credentials: 'same-origin',
    headers: { 'content-type': type || 'application/json', 'x-csrf-token': csrf }, body });
}
document.addEventListener('submit', async ev => {
  const form = ev.target;
  if (!form.dataset || !form.dataset.api) return;
  ev.preventDefault();
  const status = form.querySelector('.status') || flash;
  let url = form.dataset.api;
  const body = {};
  for (const el of form.elements) {
    if (!el.name) continue;
    const v = (el.value || '').trim();
    const slot = '{' + el.name + '}';
    if (url.includes(slot)) {
      if (!v) { status.textContent = (en ? 'fill in: ' : '请填写：') + (el.placeholder || el.name); return; }
      url = url.replace(slot, encodeURIComponent(v)); continue;
    }
    if (v === '') continue;
    if (el.dataset.fen !== undefined) {
      const f = fen(v);
      if (f === null) { status.textContent = en ? 'amount in yuan, e.g. 50 or 12.50' : '金额请写元，如 50 或 12.50'; return; }
      body[el.name] = f; continue;
    }
    body[el.name] = v;
  }
  const buttons = form.querySelectorAll('button');
  buttons.forEach(b => { b.disabled = true; });
  try {
    const r = await post(url, JSON.stringify(body));
    const j = await r.json().catch(() => ({}));
    if (r.ok) {
      try { sessionStorage.setItem('eg_flash', form.dataset.done || (en ? 'Done' : '已完成')); } catch (e) {}
      location.reload();
      return;
    }
    if (r.status === 401) { location.href = '/console/login'; return; }
    status.textContent = j.error || ('HTTP ' + r.status);
    status.className = 'status bad';
  } catch (e) { status.textContent = en ? 'not sent: no connection' : '未发送：网络断开'; }
  buttons.forEach(b => { b.disabled = false; });
});
const roster = document.getElementById('roster');
if (roster) {
  const out = document.getElementById('roster-result');
  const go = document.getElementById('roster-confirm');
  const file = roster.elements.file;
  file.addEventListener('change', () => { go.disabled = true; out.textContent = ''; });
  async function send(dry) {
    const f = file.files[0];
    if (!f) { out.textContent = en ? 'choose the roster CSV file' : '请选择花名册 CSV 文件'; return; }
    go.disabled = true;
    try {
      const r = await post('/api/roster' + (dry ? '?dry_run=true' : ''), f, 'text/csv');
      const j = await r.json().catch(() => ({}));
      out.textContent = (r.ok ? (dry ? (en ? 'Dry run: nothing changed yet. Would change:\n' : '试运行：尚未改变。将会改变：\n') : (en ? 'Imported:\n' : '已导入：\n')) : (en ? 'Refused:\n' : '被拒绝：\n')) + JSON.stringify(j, null, 2);
      out.className = r.ok ? 'ok' : 'bad';
      go.disabled = !(r.ok && dry);
    } catch (e) { out.textContent = en ? 'not sent: no connection' : '未发送：网络断开'; }
  }
  roster.addEventListener('submit', ev => { ev.preventDefault(); send(true); });
  go.addEventListener('click', () => send(false));
}
})();
"#;

/// A page refused: the status and a sentence, in the page frame.
pub fn refusal(lang: Lang, actor: &Actor, status: StatusCode, message: &str) -> Response {
    let markup = layout(
        lang,
        lang.t("无法显示", "Not shown"),
        Some(actor),
        "/console",
        html! { p.error role="alert" { (message) } },
    );
    (status, page(markup)).into_response()
}

/// 403 unless `actor`'s role may see `p` (every page handler asks first): `Some` is the refusal.
pub fn refused(lang: Lang, actor: &Actor, p: nav::Page) -> Option<Response> {
    if p.visible_to(actor.role) {
        return None;
    }
    metrics::counter!("eldergate_http_rejected_total", "reason" => "console_role").increment(1);
    tracing::warn!(staff_id = %actor.staff_id, role = actor.role.as_str(), page = p.path(), "console page refused to this role");
    Some(refusal(
        lang,
        actor,
        StatusCode::FORBIDDEN,
        lang.t(
            "你的角色不能查看这个页面",
            "Your role may not see this page",
        ),
    ))
}

/// 400 with what is wrong with a query (counted, logged): absurd input is the user's, not a 500.
pub fn bad_query(lang: Lang, actor: &Actor, message: &str) -> Response {
    metrics::counter!("eldergate_http_rejected_total", "reason" => "console_query").increment(1);
    tracing::info!(%message, "console query refused");
    refusal(lang, actor, StatusCode::BAD_REQUEST, message)
}

/// The journal could not be read: 503 (try again).
pub fn unavailable(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "console page: the journal cannot be read");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "the journal cannot be read just now; try again",
    )
        .into_response()
}

/// The community's time zone (`time_zone`), UTC if it cannot be loaded.
pub fn zone(registry: &crate::registry::Registry) -> jiff::tz::TimeZone {
    jiff::tz::TimeZone::get(&registry.time_zone).unwrap_or(jiff::tz::TimeZone::UTC)
}

/// Today in the community.
pub fn today(registry: &crate::registry::Registry) -> jiff::civil::Date {
    jiff::Timestamp::now().to_zoned(zone(registry)).date()
}

/// The journal's form (UTC) of the first instant of local `date`, or `None` out of range.
pub fn day_start(registry: &crate::registry::Registry, date: jiff::civil::Date) -> Option<String> {
    date.to_zoned(zone(registry))
        .ok()
        .map(|z| crate::journal::format_ts(z.timestamp()))
}

/// A journal time (UTC) as local `YYYY-MM-DD HH:MM:SS` (unparsable: as stored).
pub fn local_time(registry: &crate::registry::Registry, at: &str) -> String {
    match at.parse::<jiff::Timestamp>() {
        Ok(t) => t
            .to_zoned(zone(registry))
            .strftime("%Y-%m-%d %H:%M:%S")
            .to_string(),
        Err(_) => at.to_string(),
    }
}

/// A query field as typed: `None` when absent or blank, else trimmed; too long is an error.
pub fn field<'a>(v: &'a Option<String>, name: &str, max: usize) -> Result<Option<&'a str>, String> {
    match v.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(s) if s.chars().count() > max => Err(format!("{name}: at most {max} characters")),
        Some(s) => Ok(Some(s)),
    }
}

/// A query date (`YYYY-MM-DD`), if given.
pub fn date_field(v: &Option<String>, name: &str) -> Result<Option<jiff::civil::Date>, String> {
    match field(v, name, 10)? {
        None => Ok(None),
        Some(s) => s
            .parse::<jiff::civil::Date>()
            .map(Some)
            .map_err(|_| format!("{name}={s:?}: use YYYY-MM-DD")),
    }
}

/// Fen as yuan for people: `12.50`.
pub fn yuan(fen: i64) -> String {
    crate::canteen::reports::yuan(fen)
}

/// The alert kinds, labelled.
pub fn kind_label(lang: Lang, kind: &str) -> String {
    board::kind_label(lang, kind)
}

/// Every alert kind the gateway raises.
pub const ALERT_KINDS: &[&str] = &[
    "sos",
    "missed_checkin",
    "device_offline",
    "low_battery",
    "disk_low",
];
