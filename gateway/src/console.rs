//! The staff console: server-rendered pages (maud, checked at compile time), Simplified Chinese
//! by default with an English switch, phone-first (usable at 360 px, large touch targets), no
//! front-end build: one small hand-written script per page, served from the binary.
//!
//! Every page is behind the auth layer (`auth.rs`) except the login page, invites and static
//! files. Pages only read; every change goes through the JSON API with the session's CSRF token,
//! so the page and the API refuse the same things for the same reasons (roles are checked in
//! the domain operations).

use crate::auth::{Actor, Via};
use crate::http::Api;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use maud::{html, Markup, PreEscaped, DOCTYPE};

mod board;
mod login;

/// The console's routes (merged into the API router, under its auth layer).
pub fn routes() -> Router<Api> {
    Router::new()
        .route("/console", get(board::board_page))
        .route("/console/board/rows", get(board::rows))
        .route("/console/static/board.js", get(board::script))
        .route("/console/static/console.css", get(stylesheet))
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
"#;

/// Escapes nothing: for the inline JSON the pages embed (already valid JSON, `<` escaped).
pub fn raw_json(v: &serde_json::Value) -> PreEscaped<String> {
    PreEscaped(v.to_string().replace('<', "\\u003c"))
}
