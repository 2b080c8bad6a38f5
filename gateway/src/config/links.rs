//! Checks of the outward links' settings: TLS to the central store (crate::central_link) and the
//! webhook channels (presets, secrets, CA files). Secrets are read here only to learn that they
//! can be read; no message quotes one.

use super::*;
use crate::alerting::channels::read_secret;

/// Makes the links' files relative to the config file's directory (absolute paths stay).
pub(super) fn resolve_paths(config: &mut Config, base: &Path) {
    if let Some(p) = config.central.ca_file.as_mut() {
        *p = base.join(&*p);
    }
    for w in &mut config.webhooks {
        for p in [&mut w.key_file, &mut w.secret_file, &mut w.ca_file]
            .into_iter()
            .flatten()
        {
            *p = base.join(&*p);
        }
    }
}

pub(super) fn validate(config: &Config, problems: &mut Vec<Problem>) {
    use crate::central_link::CentralLinkError;
    if let Err(e) = crate::central_link::check(&config.central.url, config.central.ca_file.as_deref())
    {
        let key = match e {
            CentralLinkError::CaFile { .. } | CentralLinkError::CaWithoutTls => "central.ca_file",
            _ => "central.url",
        };
        problems.push(problem(key, e.to_string()));
    }
    if let Some(url) = &config.console_url {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            problems.push(problem(
                "console_url",
                format!("{url:?} must be an http:// or https:// address"),
            ));
        }
    }
    let mut seen: BTreeMap<&str, String> = BTreeMap::new();
    for (i, w) in config.webhooks.iter().enumerate() {
        let path = format!("webhooks[{i}]");
        validate_webhook(w, &path, problems);
        // Two entries may share a channel (same name or URL) only if they send the same way.
        let how = format!(
            "{:?}{:?}{:?}{:?}{:?}{:?}{:?}{:?}",
            w.url, w.preset, w.format, w.key_file, w.key_env, w.secret_file, w.secret_env, w.ca_file
        );
        match seen.get(w.channel_ref()) {
            Some(other) if *other != how => problems.push(problem(
                format!("{path}.name"),
                format!(
                    "{:?} is already a channel that sends differently; give each channel its own name",
                    w.channel_ref()
                ),
            )),
            _ => {
                seen.insert(w.channel_ref(), how);
            }
        }
    }
}

fn validate_webhook(w: &WebhookConfig, path: &str, problems: &mut Vec<Problem>) {
    let robot = w.preset != WebhookPreset::Json;
    if let Some(name) = &w.name {
        if !is_valid_id(name) {
            problems.push(problem(
                format!("{path}.name"),
                format!("{name:?} must be 1-64 characters of A-Z a-z 0-9 - _ ."),
            ));
        }
    } else if robot {
        problems.push(problem(
            format!("{path}.name"),
            "a robot channel needs a name (pending deliveries refer to it across restarts)",
        ));
    }
    let key = read_secret(w.key_file.as_deref(), w.key_env.as_deref());
    let secret = read_secret(w.secret_file.as_deref(), w.secret_env.as_deref());
    for (field, result) in [("key", &key), ("secret", &secret)] {
        if let Err(e) = result {
            problems.push(problem(format!("{path}.{field}_file"), e.clone()));
        }
    }
    match w.preset {
        WebhookPreset::Json => {
            if w.key_file.is_some() || w.key_env.is_some() || w.secret_file.is_some() || w.secret_env.is_some() {
                problems.push(problem(
                    format!("{path}.preset"),
                    "a json webhook sends no key or secret; use preset = \"wecom\" or \"dingtalk\", or remove them",
                ));
            }
            if w.format != WebhookFormat::Text {
                problems.push(problem(
                    format!("{path}.format"),
                    "format applies to the wecom and dingtalk presets only",
                ));
            }
        }
        WebhookPreset::Wecom | WebhookPreset::Dingtalk => {
            if matches!(key, Ok(None)) {
                problems.push(problem(
                    format!("{path}.key_file"),
                    "the robot's key is missing; set key_file or key_env (never the URL)",
                ));
            }
            if w.preset == WebhookPreset::Wecom
                && (w.secret_file.is_some() || w.secret_env.is_some())
            {
                problems.push(problem(
                    format!("{path}.secret_file"),
                    "a WeCom group robot has no signing secret; remove secret_file / secret_env",
                ));
            }
            if !w.url.starts_with("https://") {
                problems.push(problem(
                    format!("{path}.url"),
                    "a robot's URL must be https:// (its key travels in the URL)",
                ));
            }
            if let Ok(u) = reqwest::Url::parse(&w.url) {
                if u.query_pairs()
                    .any(|(k, _)| matches!(k.as_ref(), "key" | "access_token" | "sign"))
                {
                    problems.push(problem(
                        format!("{path}.url"),
                        "remove the key / access_token from the URL and put it in key_file or key_env (the URL is stored and may be logged)",
                    ));
                }
            }
        }
    }
    if let Some(ca) = &w.ca_file {
        if let Err(e) = crate::tls::load_ca_file(ca) {
            problems.push(problem(format!("{path}.ca_file"), e.to_string()));
        }
    }
}
