//! Login, logout, invites and the language switch.
//!
//! A login is checked against the throttle first (429 without touching argon2), then the
//! password; every failure is logged with the staff id and address and counted
//! (`eldergate_login_failed_total{reason}`). A login form is not CSRF-protected by a token (there
//! is no session yet): the session cookie is SameSite=Strict and a cross-origin `Origin` is
//! refused.

use super::{layout, page, Lang};
use crate::auth::layer::{client_addr, cookie, SESSION_COOKIE};
use crate::auth::throttle::Blocked;
use crate::auth::AuthError;
use crate::http::Api;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::{html, Markup};
use serde::Deserialize;

fn login_page(lang: Lang, message: Option<&str>) -> Markup {
    layout(
        lang,
        lang.t("登录", "Log in"),
        None,
        "/console/login",
        html! {
            form.login method="post" action="/console/login" {
                h2 { (lang.t("员工登录", "Staff login")) }
                @if let Some(m) = message { p.error role="alert" { (m) } }
                label { (lang.t("员工号", "Staff id"))
                    input name="staff_id" autocomplete="username" required autofocus; }
                label { (lang.t("密码", "Password"))
                    input name="password" type="password" autocomplete="current-password" required; }
                button type="submit" { (lang.t("登录", "Log in")) }
                p.meta { (lang.t("没有密码？请管理员运行 eldergate user invite 员工号。",
                    "No password yet? Ask an admin to run eldergate user invite STAFF_ID.")) }
            }
        },
    )
}

pub(super) async fn form(headers: HeaderMap) -> Response {
    page(login_page(Lang::of(&headers), None))
}

#[derive(Deserialize)]
pub(super) struct LoginForm {
    staff_id: String,
    password: String,
}

fn cross_origin(headers: &HeaderMap) -> bool {
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    match origin {
        None | Some("null") => false,
        Some(o) => o.split("://").nth(1) != host,
    }
}

pub(super) async fn submit(State(api): State<Api>, req: Request) -> Response {
    let lang = Lang::of(req.headers());
    let (addr, _) = client_addr(&api.auth, req.extensions(), req.headers());
    if cross_origin(req.headers()) {
        return (StatusCode::FORBIDDEN, "cross-origin login refused").into_response();
    }
    let Ok(Form(f)) = Form::<LoginForm>::from_request(req, &()).await else {
        return (
            StatusCode::BAD_REQUEST,
            page(login_page(
                lang,
                Some(lang.t("请填写员工号和密码", "Fill in staff id and password")),
            )),
        )
            .into_response();
    };
    let auth = &api.auth;
    let staff: String = f.staff_id.trim().chars().take(64).collect();
    if let Err(blocked) = auth.throttle.check(&staff, addr) {
        let reason = match blocked {
            Blocked::Account => "throttled_account",
            Blocked::Address => "throttled_address",
        };
        metrics::counter!("eldergate_login_failed_total", "reason" => reason).increment(1);
        tracing::warn!(staff_id = %staff, %addr, reason, "login refused: too many failed logins");
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "900")],
            page(login_page(
                lang,
                Some(lang.t(
                    "失败次数太多，请 15 分钟后再试，或请管理员重设密码",
                    "Too many failed logins; try again in 15 minutes or ask an admin to reset the password",
                )),
            )),
        )
            .into_response();
    }
    let ok = match auth.store.verify_password(&staff, &f.password).await {
        Ok(ok) => ok && auth.role(&staff).is_some(),
        Err(e) => {
            tracing::error!(error = %e, "accounts database failed during login");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "accounts database unavailable",
            )
                .into_response();
        }
    };
    if !ok {
        auth.throttle.failed(&staff, addr);
        metrics::counter!("eldergate_login_failed_total", "reason" => "wrong_password")
            .increment(1);
        tracing::warn!(staff_id = %staff, %addr, "failed login: wrong staff id or password");
        return (
            StatusCode::UNAUTHORIZED,
            page(login_page(
                lang,
                Some(lang.t("员工号或密码不对", "Wrong staff id or password")),
            )),
        )
            .into_response();
    }
    auth.throttle.succeeded(&staff);
    match auth.store.create_session(&staff).await {
        Ok((sid, _csrf)) => {
            metrics::counter!("eldergate_logins_total").increment(1);
            tracing::info!(staff_id = %staff, %addr, "staff logged in");
            (
                [(header::SET_COOKIE, auth.session_cookie(&sid))],
                Redirect::to("/console"),
            )
                .into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot create a session");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "accounts database unavailable",
            )
                .into_response()
        }
    }
}

use axum::extract::FromRequest;

pub(super) async fn logout(State(api): State<Api>, headers: HeaderMap) -> Response {
    if let Some(sid) = cookie(&headers, SESSION_COOKIE) {
        if let Err(e) = api.auth.store.end_session(sid).await {
            tracing::error!(error = %e, "cannot end a session");
        }
    }
    (
        [(header::SET_COOKIE, api.auth.clear_cookie())],
        Redirect::to("/console/login"),
    )
        .into_response()
}

#[derive(Deserialize)]
pub(super) struct LangQuery {
    to: String,
    #[serde(default)]
    back: Option<String>,
}

/// A page to go back to: a console path (with its query), never another site or the switch.
fn console_page(path: &str) -> bool {
    // Visible ASCII only: a Location header can hold nothing else (a control character would
    // make the redirect fail), and a browser's Referer is percent-encoded anyway.
    path.bytes().all(|b| b.is_ascii_graphic())
        && path.starts_with("/console")
        && !path.starts_with("/console/lang")
        && !path.contains("//")
        && !path.contains('\\')
}

/// The path and query of the `Referer` URL.
fn referer_path(headers: &HeaderMap) -> Option<String> {
    let url = reqwest::Url::parse(headers.get(header::REFERER)?.to_str().ok()?).ok()?;
    Some(match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    })
}

/// Sets the language cookie and goes back (only to a console page: no open redirect): to the
/// page the switch was clicked on, with its filters (the browser's `Referer`), else to `back`
/// (the page's path), else to the board.
pub(super) async fn switch_language(headers: HeaderMap, Query(q): Query<LangQuery>) -> Response {
    let value = if q.to == "en" { "en" } else { "zh" };
    let back = referer_path(&headers)
        .filter(|b| console_page(b))
        .or(q.back.filter(|b| console_page(b)))
        .unwrap_or_else(|| "/console".into());
    (
        [(
            header::SET_COOKIE,
            format!("eg_lang={value}; Path=/; SameSite=Strict; Max-Age=31536000"),
        )],
        Redirect::to(&back),
    )
        .into_response()
}

fn invite_page(lang: Lang, message: Option<&str>) -> Markup {
    layout(
        lang,
        lang.t("设置密码", "Set a password"),
        None,
        "/console/login",
        html! {
            form.login method="post" {
                h2 { (lang.t("设置密码", "Set your password")) }
                @if let Some(m) = message { p.error role="alert" { (m) } }
                label { (lang.t("新密码（至少 10 个字符）", "New password (at least 10 characters)"))
                    input name="password" type="password" autocomplete="new-password" required minlength="10"; }
                button type="submit" { (lang.t("保存", "Save")) }
            }
        },
    )
}

pub(super) async fn invite_form(headers: HeaderMap) -> Response {
    page(invite_page(Lang::of(&headers), None))
}

#[derive(Deserialize)]
pub(super) struct InviteForm {
    password: String,
}

pub(super) async fn invite_submit(
    State(api): State<Api>,
    Path(secret): Path<String>,
    headers: HeaderMap,
    Form(f): Form<InviteForm>,
) -> Response {
    let lang = Lang::of(&headers);
    if cross_origin(&headers) {
        return (StatusCode::FORBIDDEN, "cross-origin request refused").into_response();
    }
    match api.auth.store.redeem_invite(&secret, &f.password).await {
        Ok(staff) => {
            tracing::info!(staff_id = %staff, "password set from an invite");
            Redirect::to("/console/login").into_response()
        }
        Err(AuthError::WeakPassword) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            page(invite_page(
                lang,
                Some(lang.t(
                    "密码需要 10 到 256 个字符",
                    "A password needs 10 to 256 characters",
                )),
            )),
        )
            .into_response(),
        Err(AuthError::BadInvite) => {
            metrics::counter!("eldergate_login_failed_total", "reason" => "bad_invite")
                .increment(1);
            (
                StatusCode::NOT_FOUND,
                page(invite_page(
                    lang,
                    Some(lang.t(
                        "邀请链接无效、已用过或已过期",
                        "This invite link is unknown, used or expired",
                    )),
                )),
            )
                .into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot redeem an invite");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "accounts database unavailable",
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn referer(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::REFERER, v.parse().unwrap());
        h
    }

    #[test]
    fn the_switch_goes_back_to_the_page_with_its_filters_and_nowhere_else() {
        let back = |h: &HeaderMap, b: Option<&str>| {
            referer_path(h)
                .filter(|p| console_page(p))
                .or(b.map(str::to_string).filter(|p| console_page(p)))
        };
        let h = referer("https://gw.example:8443/console/history?kind=sos&state=open#x");
        assert_eq!(
            back(&h, Some("/console/history")).as_deref(),
            Some("/console/history?kind=sos&state=open")
        );
        // Another site's page, the switch itself, a scheme-relative path: not followed.
        for r in [
            "https://evil.example/elsewhere",
            "https://gw.example/console/lang?to=en",
            "https://gw.example//evil.example/console",
            "not a url",
        ] {
            assert_eq!(back(&referer(r), None), None, "{r}");
        }
        assert_eq!(
            back(&HeaderMap::new(), Some("/console/visits")).as_deref(),
            Some("/console/visits")
        );
        for b in [
            "/console\n/x",
            "//evil.example/console",
            "/console/\u{5f20}",
            "https://evil.example/console",
            "/console\\evil",
        ] {
            assert_eq!(back(&HeaderMap::new(), Some(b)), None, "{b:?}");
        }
    }
}
