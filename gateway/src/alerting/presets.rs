//! What a staff robot shows: one alert change as a WeCom or DingTalk message, and DingTalk's
//! signature. Pure functions, no I/O.
//!
//! Guarantees: the message carries the alert's kind, priority, the resident's name **masked** as
//! the `StaffAlert` already has it, the location, the ladder step and, when `console_url` is set,
//! the link `{console_url}/console/alerts/{id}`; it never exceeds the robots' size limits (WeCom
//! text 2048 bytes, markdown 4096) — longer fields are cut at a character boundary.

use crate::config::WebhookFormat;
use base64::Engine;
use eldergate_protocol::payload::{Priority, StaffAlert};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};

/// WeCom's limit for a text message's content, in bytes (markdown allows 4096; we keep both
/// under the smaller).
pub const MAX_CONTENT_BYTES: usize = 2000;

fn kind_label(kind: &str) -> &str {
    match kind {
        "sos" => "一键呼叫 SOS",
        "device_offline" => "设备离线",
        "low_battery" => "设备电量低",
        "missed_checkin" => "今日未报平安",
        "disk_low" => "网关磁盘空间不足",
        other => other,
    }
}

fn priority_label(p: Priority) -> &'static str {
    match p {
        Priority::High => "紧急",
        Priority::Medium => "重要",
        Priority::Low => "一般",
    }
}

fn change_label(change: &str) -> &str {
    match change {
        "raised" => "新告警",
        "joined" => "再次呼叫",
        "escalated" => "无人响应，已升级",
        "acknowledged" => "已有人处理",
        "resolved" => "已解除",
        "cancelled" => "已取消",
        "republished" => "仍未处理",
        other => other,
    }
}

/// The console page of an alert, when the console's address is known.
pub fn alert_link(console_url: Option<&str>, alert_id: i64) -> Option<String> {
    console_url.map(|base| format!("{}/console/alerts/{alert_id}", base.trim_end_matches('/')))
}

/// The title line, e.g. `[紧急] 一键呼叫 SOS · 新告警`.
pub fn title(a: &StaffAlert) -> String {
    format!(
        "[{}] {} · {}",
        priority_label(a.priority),
        kind_label(&a.kind),
        change_label(&a.change)
    )
}

/// The body lines (label, value), in order.
fn lines(a: &StaffAlert) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Some(name) = &a.resident_name {
        out.push(("老人", name.clone()));
    } else if let Some(id) = &a.resident_id {
        out.push(("老人", id.clone()));
    }
    if let Some(loc) = &a.location {
        out.push(("位置", loc.clone()));
    }
    out.push(("通知", format!("第 {} 级", a.step + 1)));
    if a.press_count > 1 {
        out.push(("呼叫次数", a.press_count.to_string()));
    }
    if let Some(d) = &a.detail {
        out.push(("详情", d.clone()));
    }
    if let Some(ack) = &a.acknowledged {
        out.push(("处理人", ack.by.clone()));
    }
    out.push(("设备", a.device_id.clone()));
    out.push(("告警", format!("#{} · {}", a.alert_id, a.raised_at)));
    out
}

/// Plain text, one `label：value` per line, the link last.
pub fn text(a: &StaffAlert, console_url: Option<&str>) -> String {
    let mut s = title(a);
    for (label, value) in lines(a) {
        s.push('\n');
        s.push_str(label);
        s.push('：');
        s.push_str(&one_line(&value));
    }
    if let Some(link) = alert_link(console_url, a.alert_id) {
        s.push_str("\n处理：");
        s.push_str(&link);
    }
    cut(s, MAX_CONTENT_BYTES)
}

/// Markdown: the title in bold, a quoted line per field, the link as `[打开告警](…)`.
pub fn markdown(a: &StaffAlert, console_url: Option<&str>) -> String {
    let mut s = format!("**{}**", md_escape(&title(a)));
    for (label, value) in lines(a) {
        s.push_str("\n> ");
        s.push_str(label);
        s.push('：');
        s.push_str(&md_escape(&one_line(&value)));
    }
    if let Some(link) = alert_link(console_url, a.alert_id) {
        s.push_str(&format!("\n\n[打开告警]({link})"));
    }
    cut(s, MAX_CONTENT_BYTES)
}

/// A WeCom group robot message (`msgtype` text or markdown).
pub fn wecom_body(a: &StaffAlert, format: WebhookFormat, console_url: Option<&str>) -> Value {
    match format {
        WebhookFormat::Text => {
            json!({"msgtype": "text", "text": {"content": text(a, console_url)}})
        }
        WebhookFormat::Markdown => {
            json!({"msgtype": "markdown", "markdown": {"content": markdown(a, console_url)}})
        }
    }
}

/// A DingTalk custom robot message (`msgtype` text or markdown with a title).
pub fn dingtalk_body(a: &StaffAlert, format: WebhookFormat, console_url: Option<&str>) -> Value {
    match format {
        WebhookFormat::Text => {
            json!({"msgtype": "text", "text": {"content": text(a, console_url)}})
        }
        WebhookFormat::Markdown => json!({
            "msgtype": "markdown",
            "markdown": {"title": title(a), "text": markdown(a, console_url)}
        }),
    }
}

/// DingTalk's signature (加签): base64 of HMAC-SHA256 keyed by the secret over
/// `"{timestamp_ms}\n{secret}"`. The caller URL-encodes it into the `sign` query parameter.
pub fn dingtalk_sign(secret: &str, timestamp_ms: i64) -> String {
    // HMAC takes a key of any length; new_from_slice cannot fail for it.
    let mut mac = match Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(format!("{timestamp_ms}\n{secret}").as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn one_line(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}

/// Keeps a field from changing the markdown around it (links, emphasis, headings).
fn md_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '_' | '[' | ']' | '(' | ')' | '#' | '`' | '<' | '>') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// At most `max` bytes, cut at a character boundary, with `…` when cut.
fn cut(mut s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let mut end = max - '…'.len_utf8();
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push('…');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use eldergate_protocol::payload::AlertState;

    fn alert() -> StaffAlert {
        StaffAlert {
            v: 1,
            alert_id: 17,
            kind: "sos".into(),
            priority: Priority::High,
            state: AlertState::Raised,
            change: "escalated".into(),
            device_id: "btn-0001".into(),
            resident_id: Some("R0001".into()),
            location: Some("3号楼2单元401".into()),
            resident_name: Some("张*华".into()),
            detail: None,
            step: 1,
            press_count: 1,
            raised_at: "2026-11-30T23:10:01.000Z".into(),
            notify: vec!["S001".into()],
            acknowledged: None,
            resolved: None,
        }
    }

    #[test]
    fn the_text_names_kind_priority_masked_resident_location_step_and_link() {
        let t = text(&alert(), Some("https://gw.example/"));
        for part in [
            "[紧急] 一键呼叫 SOS · 无人响应，已升级",
            "老人：张*华",
            "位置：3号楼2单元401",
            "通知：第 2 级",
            "处理：https://gw.example/console/alerts/17",
        ] {
            assert!(t.contains(part), "{part:?} missing from {t}");
        }
    }

    #[test]
    fn without_a_console_url_there_is_no_link() {
        assert!(!text(&alert(), None).contains("/console/alerts/"));
        assert!(!markdown(&alert(), None).contains("/console/alerts/"));
    }

    #[test]
    fn an_oversize_field_is_cut_below_the_robots_limit() {
        let mut a = alert();
        a.location = Some("楼".repeat(5000));
        a.detail = Some("x\n".repeat(5000));
        for s in [text(&a, None), markdown(&a, Some("https://gw.example"))] {
            assert!(s.len() <= MAX_CONTENT_BYTES, "{}", s.len());
            assert!(s.ends_with('…'));
        }
    }

    #[test]
    fn a_field_cannot_inject_markdown_or_lines() {
        let mut a = alert();
        a.location = Some("[点我](https://evil.example)\n**假告警**".into());
        let md = markdown(&a, None);
        assert!(!md.contains("](https://evil"), "{md}");
        assert!(!text(&a, None).contains("\n**假告警**"));
    }

    #[test]
    fn dingtalk_signature_matches_the_published_algorithm() {
        // Computed independently: python3 -c 'import hmac,hashlib,base64;
        // s="SECtest";t=1700000000000;print(base64.b64encode(hmac.new(s.encode(),
        // f"{t}\n{s}".encode(),hashlib.sha256).digest()).decode())'
        assert_eq!(
            dingtalk_sign("SECtest", 1_700_000_000_000),
            "aZLLrriXgn05YbwaGR7knYsLeJADjr9NwLaNNKpxh4g="
        );
    }
}
