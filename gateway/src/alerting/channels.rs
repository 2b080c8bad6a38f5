//! Webhook channels at run time: for each `[[webhooks]]` entry, how to send (preset, format),
//! where (URL, with the key added only when sending), with which trust roots (`ca_file`), and
//! what counts as accepted.
//!
//! Guarantees:
//! - HTTPS through rustls (reqwest `rustls-tls`), the public roots plus the channel's `ca_file`.
//! - A delivery is accepted only on 2xx, and for the robots only when the answer's `errcode` is 0
//!   (WeCom and DingTalk answer HTTP 200 with an error code on a bad key, signature or rate
//!   limit); anything else is a failed delivery, retried by the sender like any other.
//! - Secrets (the robot's key, DingTalk's signing secret) are read from a file or the
//!   environment, held in [`Secret`] (its `Debug` prints nothing) and never appear in an error,
//!   a log line or the journal: reqwest errors are stripped of their URL, and the outbox row
//!   stores the channel's name, not the keyed URL.

use crate::config::{Config, WebhookConfig, WebhookFormat, WebhookPreset};
use eldergate_protocol::payload::StaffAlert;
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

/// A secret read from a file or the environment.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// Reads a secret from `file` (trimmed) or the environment variable `env`; `Ok(None)` when
/// neither is set. The error never contains the secret.
pub fn read_secret(file: Option<&Path>, env: Option<&str>) -> Result<Option<Secret>, String> {
    let value = match (file, env) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => return Err("set the _file or the _env, not both".into()),
        (Some(f), None) => {
            std::fs::read_to_string(f).map_err(|e| format!("cannot read {}: {e}", f.display()))?
        }
        (None, Some(v)) => std::env::var(v)
            .map_err(|_| format!("environment variable {v} is not set (or not UTF-8)"))?,
    };
    let value = value.trim();
    if value.is_empty() {
        return Err("is empty".into());
    }
    Ok(Some(Secret(value.to_string())))
}

/// One configured channel, ready to send.
#[derive(Debug)]
struct Channel {
    preset: WebhookPreset,
    format: WebhookFormat,
    url: reqwest::Url,
    key: Option<Secret>,
    secret: Option<Secret>,
    client: reqwest::Client,
}

/// Every channel by the reference outbox rows store ([`WebhookConfig::channel_ref`]).
#[derive(Debug)]
pub struct Channels {
    by_ref: HashMap<String, Result<Channel, String>>,
    plain: reqwest::Client,
    console_url: Option<String>,
}

fn client(ca_file: Option<&Path>) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .https_only(false);
    if let Some(ca) = ca_file {
        for cert in crate::tls::load_ca_file(ca).map_err(|e| e.to_string())? {
            b = b.add_root_certificate(cert);
        }
    }
    b.build()
        .map_err(|e| format!("cannot build an HTTP client: {}", e.without_url()))
}

fn channel(w: &WebhookConfig) -> Result<Channel, String> {
    let url = reqwest::Url::parse(&w.url).map_err(|e| format!("url: {e}"))?;
    let key = read_secret(w.key_file.as_deref(), w.key_env.as_deref())
        .map_err(|e| format!("key: {e}"))?;
    let secret = read_secret(w.secret_file.as_deref(), w.secret_env.as_deref())
        .map_err(|e| format!("secret: {e}"))?;
    if w.preset != WebhookPreset::Json && key.is_none() {
        return Err("the robot's key is not configured (key_file or key_env)".into());
    }
    Ok(Channel {
        preset: w.preset,
        format: w.format,
        url,
        key,
        secret,
        client: client(w.ca_file.as_deref())?,
    })
}

impl Channels {
    /// Builds every channel of the config. A channel that cannot be built (a secret file gone
    /// since `check-config`) is logged once here and fails each of its deliveries, loudly, so its
    /// rows stay pending until it is fixed; the other channels work.
    pub fn from_config(cfg: &Config) -> Result<Self, String> {
        let mut by_ref = HashMap::new();
        for w in &cfg.webhooks {
            let built = channel(w);
            if let Err(e) = &built {
                tracing::error!(channel = w.channel_ref(), error = %e, "webhook channel unusable; its deliveries will fail until it is fixed");
            }
            by_ref.entry(w.channel_ref().to_string()).or_insert(built);
        }
        Ok(Channels {
            by_ref,
            plain: client(None)?,
            console_url: cfg.console_url.clone(),
        })
    }

    /// Sends one outbox row: `channel_ref` as stored, `body` the `StaffAlert` JSON.
    pub async fn deliver(&self, channel_ref: &str, body: &str) -> Result<(), String> {
        let Some(ch) = self.by_ref.get(channel_ref) else {
            // A row written before its channel had a name, or whose channel left the config.
            if channel_ref.starts_with("http://") || channel_ref.starts_with("https://") {
                return post(
                    &self.plain,
                    channel_ref.to_string(),
                    body.to_string(),
                    false,
                )
                .await;
            }
            return Err(format!(
                "no webhook channel named {channel_ref:?} in the config; the delivery waits until it is configured again"
            ));
        };
        let ch = ch.as_ref().map_err(|e| format!("channel unusable: {e}"))?;
        if ch.preset == WebhookPreset::Json {
            return post(&ch.client, ch.url.to_string(), body.to_string(), false).await;
        }
        let alert: StaffAlert = serde_json::from_str(body)
            .map_err(|e| format!("the stored alert cannot be read: {e}"))?;
        let console = self.console_url.as_deref();
        let mut url = ch.url.clone();
        let key = ch.key.as_ref().map(Secret::expose).unwrap_or_default();
        let message = match ch.preset {
            WebhookPreset::Wecom => {
                url.query_pairs_mut().append_pair("key", key);
                super::presets::wecom_body(&alert, ch.format, console)
            }
            _ => {
                let mut q = url.query_pairs_mut();
                q.append_pair("access_token", key);
                if let Some(secret) = &ch.secret {
                    let ts = jiff::Timestamp::now().as_millisecond();
                    q.append_pair("timestamp", &ts.to_string());
                    q.append_pair("sign", &super::presets::dingtalk_sign(secret.expose(), ts));
                }
                drop(q);
                super::presets::dingtalk_body(&alert, ch.format, console)
            }
        };
        post(&ch.client, url.to_string(), message.to_string(), true).await
    }
}

/// POSTs JSON; `robot`: the answer must also say `errcode: 0`. Errors carry no URL.
async fn post(
    client: &reqwest::Client,
    url: String,
    body: String,
    robot: bool,
) -> Result<(), String> {
    let resp = client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| crate::tls::describe(e.without_url()))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!("HTTP {status}"));
    }
    if !robot {
        return Ok(());
    }
    let answer: serde_json::Value = resp.json().await.map_err(|e| {
        format!(
            "HTTP {status} but the answer is not JSON: {}",
            e.without_url()
        )
    })?;
    match answer.get("errcode").and_then(serde_json::Value::as_i64) {
        Some(0) => Ok(()),
        code => {
            let msg: String = answer
                .get("errmsg")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("")
                .chars()
                .take(200)
                .collect();
            Err(format!(
                "the robot refused the message: errcode {} {msg:?}",
                code.map_or("missing".to_string(), |c| c.to_string())
            ))
        }
    }
}
