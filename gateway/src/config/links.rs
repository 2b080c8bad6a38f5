//! Checks of the outward links' settings: TLS to the central store (crate::central_link) and the
//! webhook channels (presets, secrets, CA files). Secrets are read here only to learn that they
//! can be read; no message quotes one.

use super::*;
use crate::alerting::channels::read_secret;

/// Makes the links' files relative to the config file's directory (absolute paths stay).
pub(super) fn resolve_paths(config: &mut Config, base: &Path) {
    for p in [
        &mut config.central.ca_file,
        &mut config.http.tls_cert,
        &mut config.http.tls_key,
    ]
    .into_iter()
    .flatten()
    {
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
    if let Err(e) =
        crate::central_link::check(&config.central.url, config.central.ca_file.as_deref())
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
            w.url,
            w.preset,
            w.format,
            w.key_file,
            w.key_env,
            w.secret_file,
            w.secret_env,
            w.ca_file
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
            if w.key_file.is_some()
                || w.key_env.is_some()
                || w.secret_file.is_some()
                || w.secret_env.is_some()
            {
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

#[cfg(test)]
mod tests {
    use super::super::load_with_env;
    use std::path::Path;

    const BASE: &str = r#"
site_id = "s1"
gateway_id = "gw-1"
data_dir = "/tmp/x"
[broker]
mode = "external"
url = "mqtt://127.0.0.1:1883"
anonymous = true
[central]
url = "CENTRAL"
[[staff]]
id = "S1"
name = "Duty"
role = "duty"
[[staff]]
id = "S2"
name = "Manager"
role = "manager"
"#;

    /// The problems' (path, message) of a config with `central` as central.url and `extra`.
    fn problems(dir: &Path, central: &str, extra: &str) -> Vec<(String, String)> {
        let f = dir.join("c.toml");
        std::fs::write(&f, format!("{}{extra}", BASE.replace("CENTRAL", central))).unwrap();
        match load_with_env(&f, Vec::new()) {
            Ok(_) => Vec::new(),
            Err(e) => e
                .problems
                .into_iter()
                .map(|p| (p.path, p.message))
                .collect(),
        }
    }

    #[test]
    fn check_config_refuses_a_remote_central_store_without_tls_and_prefer() {
        let dir = tempfile::tempdir().unwrap();
        let p = problems(dir.path(), "postgres://gw:pw@central.example/eg", "");
        assert!(
            p.iter()
                .any(|(k, m)| k == "central.url" && m.contains("without TLS")),
            "{p:?}"
        );
        let p = problems(
            dir.path(),
            "postgres://gw@central.example/eg?sslmode=prefer",
            "",
        );
        assert!(
            p.iter().any(|(_, m)| m.contains("falls back to plaintext")),
            "{p:?}"
        );
        assert!(problems(
            dir.path(),
            "postgres://gw@central.example/eg?sslmode=verify-full",
            ""
        )
        .is_empty());
        assert!(problems(dir.path(), "postgres://postgres@127.0.0.1/eg", "").is_empty());
    }

    #[test]
    fn a_relative_central_ca_file_is_read_beside_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["central.example".into()]).unwrap();
        std::fs::write(dir.path().join("ca.pem"), cert.cert.pem()).unwrap();
        let url = "postgres://gw@central.example/eg";
        let p = problems(dir.path(), url, "");
        assert!(!p.is_empty());
        // ca_file is a key of [central]: write the table again with it.
        let f = dir.path().join("c.toml");
        let text = BASE.replace(
            "url = \"CENTRAL\"",
            &format!("url = \"{url}\"\nca_file = \"ca.pem\""),
        );
        std::fs::write(&f, text).unwrap();
        let l = load_with_env(&f, Vec::new()).unwrap();
        assert_eq!(l.config.central.ca_file, Some(dir.path().join("ca.pem")));
    }

    #[test]
    fn a_robot_needs_a_name_https_and_its_key_outside_the_url() {
        let dir = tempfile::tempdir().unwrap();
        let local = "postgres://postgres@127.0.0.1/eg";
        let p = problems(
            dir.path(),
            local,
            "[[webhooks]]\ntarget = \"S1\"\npreset = \"wecom\"\nurl = \"http://qyapi.example/send?key=abc\"\n",
        );
        let keys: Vec<&str> = p.iter().map(|(k, _)| k.as_str()).collect();
        assert!(keys.contains(&"webhooks[0].name"), "{p:?}");
        assert!(keys.contains(&"webhooks[0].key_file"), "{p:?}");
        assert!(
            p.iter().any(|(_, m)| m.contains("must be https://")),
            "{p:?}"
        );
        assert!(p.iter().any(|(_, m)| m.contains("remove the key")), "{p:?}");
        std::fs::write(dir.path().join("k"), "wecom-secret-value\n").unwrap();
        let good = "[[webhooks]]\nname = \"duty\"\ntarget = \"S1\"\npreset = \"wecom\"\nurl = \"https://qyapi.example/send\"\nkey_file = \"k\"\n";
        assert!(problems(dir.path(), local, good).is_empty());
    }

    #[test]
    fn an_unreadable_secret_is_named_without_its_value() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("empty"), "  \n").unwrap();
        let p = problems(
            dir.path(),
            "postgres://postgres@127.0.0.1/eg",
            "[[webhooks]]\nname = \"d\"\ntarget = \"S1\"\npreset = \"dingtalk\"\nurl = \"https://ding.example/robot/send\"\nkey_env = \"EG_NO_SUCH_VARIABLE_SET\"\nsecret_file = \"empty\"\n",
        );
        assert!(
            p.iter()
                .any(|(k, m)| k == "webhooks[0].key_file" && m.contains("EG_NO_SUCH_VARIABLE_SET")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|(k, m)| k == "webhooks[0].secret_file" && m.contains("empty")),
            "{p:?}"
        );
    }

    #[test]
    fn two_channels_that_send_differently_cannot_share_a_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = problems(
            dir.path(),
            "postgres://postgres@127.0.0.1/eg",
            "[[webhooks]]\nname = \"d\"\ntarget = \"S1\"\nurl = \"https://a.example/\"\n[[webhooks]]\nname = \"d\"\ntarget = \"role:duty\"\nurl = \"https://b.example/\"\n",
        );
        assert!(p.iter().any(|(k, _)| k == "webhooks[1].name"), "{p:?}");
    }
}
