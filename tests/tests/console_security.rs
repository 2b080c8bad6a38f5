//! The console beyond loopback and the API's description, from outside: the real gateway binary
//! serving HTTPS with a certificate of a test CA, `check-config` and the daemon refusing plain
//! HTTP on a public address, the reverse proxy's `X-Forwarded-For` believed only from the
//! declared proxies, and `/api/openapi.json` against the routes the gateway really serves.

use eldergate_e2e::test_ca::TestCa;
use eldergate_e2e::*;
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// A gateway process started by the test itself (the harness waits on plain HTTP), killed when
/// dropped.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `eldergate run` with `config`, its output into the file `log`.
fn daemon(config: &Path, log: &Path) -> Daemon {
    let log = std::fs::File::create(log).unwrap();
    Daemon(
        Command::new(bin_dir().join("eldergate"))
            .args(["run", "--config"])
            .arg(config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

/// Sets the config's `[http]` section to `listen` and `lines` (over the harness's original, kept
/// beside it at the first call).
fn set_http(config: &Path, listen: &str, lines: &str) {
    let original = config.with_extension("toml.orig");
    if !original.exists() {
        std::fs::copy(config, &original).unwrap();
    }
    let text = std::fs::read_to_string(&original).unwrap();
    let start = text.find("[http]\nlisten = ").unwrap();
    let end = start + text[start..].find('\n').unwrap() + 1;
    let end = end + text[end..].find('\n').unwrap() + 1;
    let text = format!(
        "{}[http]\nlisten = \"{listen}\"\n{lines}\n{}",
        &text[..start],
        &text[end..]
    );
    std::fs::write(config, text).unwrap();
}

fn eldergate(args: &[&str], config: &Path) -> std::process::Output {
    let mut c = Command::new(bin_dir().join("eldergate"));
    if args[0] == "check-config" {
        c.arg("check-config").arg(config);
    } else {
        c.args(args).arg("--config").arg(config);
    }
    c.output().unwrap()
}

fn said(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn spec(broker_port: u16) -> GatewaySpec {
    // No central store is needed here: a local SQLite file stands in for it.
    GatewaySpec::new(broker_port, "sqlite:central.db".into(), 1)
}

/// Certificates are renewed (every 90 days with ACME): a renewed pair written over the files is
/// served to new connections without a restart, while a pair that cannot be used — the
/// certificate changed but not yet its key, 1 MiB of junk — is refused, logged, and the
/// certificate in use stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_taken_without_a_restart_and_a_broken_one_is_not() {
    eldergate::tls::install_crypto_provider();
    let broker = Mosquitto::start().unwrap();
    let gw = Gateway::prepare(&spec(broker.port), None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (crt, key) = (
        dir.path().join("console.crt"),
        dir.path().join("console.key"),
    );
    let old_ca = TestCa::new("eldergate CA before the renewal").unwrap();
    let new_ca = TestCa::new("eldergate CA after the renewal").unwrap();
    let old = old_ca.server(&["127.0.0.1"]).unwrap();
    let new = new_ca.server(&["127.0.0.1"]).unwrap();
    std::fs::write(&crt, &old.cert_pem).unwrap();
    std::fs::write(&key, &old.key_pem).unwrap();
    let port = gw.http_port;
    set_http(
        &gw.config,
        &format!("127.0.0.1:{port}"),
        &format!(
            "tls_cert = \"{}\"\ntls_key = \"{}\"\ntls_reload_s = 1",
            crt.display(),
            key.display()
        ),
    );
    let log_path = dir.path().join("gateway.log");
    let _daemon = daemon(&gw.config, &log_path);
    // A new client per look, trusting one root: a new connection and a full handshake each
    // time (a client that kept its TLS session would resume it without seeing the certificate).
    let url = format!("https://127.0.0.1:{port}/healthz");
    let answers = |ca: &TestCa| {
        let c = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let url = url.clone();
        async move { c.get(url).send().await.is_ok() }
    };
    let log_lines = |what: &str| {
        std::fs::read_to_string(&log_path)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(what))
            .count()
    };
    eventually(WAIT, "the gateway answers over HTTPS", || {
        let a = answers(&old_ca);
        async move { Ok(a.await.then_some(())) }
    })
    .await
    .unwrap();
    assert!(!answers(&new_ca).await, "the new CA is not trusted yet");

    // Half a renewal: the new certificate, the old key still beside it.
    std::fs::write(&crt, &new.cert_pem).unwrap();
    eventually(WAIT, "the mismatched pair refused", || async {
        Ok((log_lines("cannot be used; still serving") >= 1).then_some(()))
    })
    .await
    .unwrap();
    assert!(
        answers(&old_ca).await,
        "the old certificate is still served"
    );
    assert!(!answers(&new_ca).await);
    // Junk, 1 MiB of it.
    std::fs::write(&crt, vec![b'x'; 1 << 20]).unwrap();
    eventually(WAIT, "the junk refused", || async {
        Ok((log_lines("cannot be used; still serving") >= 2).then_some(()))
    })
    .await
    .unwrap();
    assert!(
        answers(&old_ca).await,
        "the old certificate is still served"
    );

    // The whole renewal: key and certificate.
    std::fs::write(&key, &new.key_pem).unwrap();
    std::fs::write(&crt, &new.cert_pem).unwrap();
    eventually(WAIT, "the renewed certificate served", || {
        let a = answers(&new_ca);
        async move { Ok(a.await.then_some(())) }
    })
    .await
    .unwrap();
    assert!(
        !answers(&old_ca).await,
        "new connections get the new certificate"
    );
    assert_eq!(log_lines("HTTPS certificate reloaded"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_logs_in_over_https_with_a_certificate_from_the_config() {
    eldergate::tls::install_crypto_provider();
    let broker = Mosquitto::start().unwrap();
    let mut with_roster = spec(broker.port);
    with_roster.residents = true;
    let gw = Gateway::prepare(&with_roster, None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("eldergate console test CA").unwrap();
    let cert = ca.server(&["localhost", "127.0.0.1"]).unwrap();
    std::fs::write(dir.path().join("console.crt"), &cert.cert_pem).unwrap();
    std::fs::write(dir.path().join("console.key"), &cert.key_pem).unwrap();
    // Beyond loopback is allowed with TLS.
    let port = gw.http_port;
    set_http(
        &gw.config,
        &format!("0.0.0.0:{port}"),
        &format!(
            "tls_cert = \"{}\"\ntls_key = \"{}\"",
            dir.path().join("console.crt").display(),
            dir.path().join("console.key").display()
        ),
    );
    let check = eldergate(&["check-config"], &gw.config);
    assert!(check.status.success(), "{}", said(&check));
    gw.set_password("S009", "duty one's password").unwrap();
    let _daemon = daemon(&gw.config, &dir.path().join("gateway.log"));
    let trusting = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let https = |path: &str| format!("https://127.0.0.1:{port}{path}");
    eventually(WAIT, "the gateway answers over HTTPS", || {
        let (c, url) = (trusting.clone(), https("/healthz"));
        async move { Ok(c.get(url).send().await.ok().map(|r| r.status())) }
    })
    .await
    .unwrap_or_else(|e| {
        let log = std::fs::read_to_string(dir.path().join("gateway.log")).unwrap_or_default();
        panic!("{e}\n{log}")
    });

    // Wrong password first: refused, over TLS like everything else.
    let r = trusting
        .post(https("/console/login"))
        .form(&[("staff_id", "S009"), ("password", "not it")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a wrong password is refused");
    let r = trusting
        .post(https("/console/login"))
        .form(&[("staff_id", "S009"), ("password", "duty one's password")])
        .send()
        .await
        .unwrap();
    assert!(r.status().is_redirection(), "{}", r.status());
    let set_cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("eg_session="))
        .expect("a session cookie")
        .to_string();
    for attr in ["HttpOnly", "SameSite=Strict", "Secure"] {
        assert!(set_cookie.contains(attr), "{attr} missing: {set_cookie}");
    }
    let session = set_cookie.split(';').next().unwrap().to_string();
    let board = trusting
        .get(https("/console"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(board.status(), 200);
    let alerts = trusting
        .get(https("/api/alerts"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(alerts.status(), 200);

    // `eldergate roster import` finds the gateway from the same config, over HTTPS: the
    // config's certificate alone is not a trust root here (the test CA signed it), --cacert is.
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let csv = dir.path().join("roster.csv");
    std::fs::write(
        &csv,
        "resident_id,name,gender,birth_date,statuses,building,unit,room,grid,phone,card_id,emergency_contact\n\
         R00001,张三1,女,1940-01-01,独居,1号楼,1单元,1,G01,,CA000001,\n",
    )
    .unwrap();
    let import = |extra: &[&str]| {
        let o = Command::new(bin_dir().join("eldergate"))
            .args(["roster", "--config"])
            .arg(&gw.config)
            .arg("import")
            .arg(&csv)
            .arg("--dry-run")
            .args(extra)
            .env("ELDERGATE_TOKEN", &gw.token)
            .output()
            .unwrap();
        (o.status.success(), said(&o))
    };
    let (ok, out) = import(&[]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("https://127.0.0.1:") && out.contains("--cacert"),
        "{out}"
    );
    let ca_arg = ca_file.to_str().unwrap();
    let (ok, out) = import(&["--cacert", ca_arg]);
    assert!(ok && out.contains("\"applied\": false"), "{out}");
    // Absurd arguments: a clear refusal each, no answer from anywhere else.
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    for (args, says) in [
        (
            vec!["--url", "not a url"],
            "cannot reach the gateway at not a url",
        ),
        (
            vec!["--cacert", garbage.to_str().unwrap()],
            "holds no PEM certificate",
        ),
        (
            vec!["--cacert", "/nonexistent/ca.pem"],
            "CA file /nonexistent/ca.pem: cannot be read",
        ),
    ] {
        let (ok, out) = import(&args);
        assert!(!ok && out.contains(says), "{args:?}: {out}");
    }
    let by_name = format!("https://localhost:{port}");
    let (ok, out) = import(&["--cacert", ca_arg, "--url", &by_name]);
    assert!(ok && out.contains("\"applied\": false"), "{out}");

    // A client that does not trust the test CA refuses the connection; plain HTTP on the HTTPS
    // port gets no HTTP answer.
    let stranger = reqwest::Client::new();
    assert!(stranger.get(https("/healthz")).send().await.is_err());
    let plain = stranger
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .timeout(Duration::from_secs(15))
        .send()
        .await;
    assert!(
        plain.is_err(),
        "plain HTTP is not served on the HTTPS port: {plain:?}"
    );
    // Garbage in place of a handshake is counted, and the server goes on.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        s.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 0, 0, 0])
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        let _ = tokio::time::timeout(WAIT, s.read(&mut buf)).await;
    }
    let metrics = trusting
        .get(https("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("eldergate_http_tls_handshake_failed_total"),
        "failed handshakes are counted"
    );
    assert_eq!(
        trusting
            .get(https("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_beyond_loopback_is_refused_by_check_config_and_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::prepare(&spec(free_port()), None).unwrap();
    let port = gw.http_port;
    for (listen, lines, key) in [
        (format!("0.0.0.0:{port}"), String::new(), "http.listen"),
        (format!("[::]:{port}"), String::new(), "http.listen"),
        (format!("192.0.2.7:{port}"), String::new(), "http.listen"),
        // A proxy declared without its addresses: anyone could forge X-Forwarded-For.
        (
            format!("0.0.0.0:{port}"),
            "behind_proxy = true".to_string(),
            "http.trusted_proxies",
        ),
    ] {
        set_http(&gw.config, &listen, &lines);
        let check = eldergate(&["check-config"], &gw.config);
        let text = said(&check);
        assert!(!check.status.success(), "{listen} {lines}: {text}");
        assert!(text.contains(key), "{listen}: {text}");
        assert!(
            text.contains("tls_cert") || text.contains("trusted_proxies"),
            "says what to do: {text}"
        );
        let run = Command::new(bin_dir().join("eldergate"))
            .args(["run", "--config"])
            .arg(&gw.config)
            .output()
            .unwrap();
        assert_eq!(run.status.code(), Some(78), "{listen}: {}", said(&run));
    }
    // A declared proxy with its address is accepted.
    set_http(
        &gw.config,
        &format!("0.0.0.0:{port}"),
        "behind_proxy = true\ntrusted_proxies = [\"10.0.0.5\"]",
    );
    let check = eldergate(&["check-config"], &gw.config);
    assert!(check.status.success(), "{}", said(&check));

    // Certificate and key: both or neither, readable, PEM, and belonging together.
    let ca = TestCa::new("t").unwrap();
    let a = ca.server(&["localhost"]).unwrap();
    let b = ca.server(&["localhost"]).unwrap();
    let file = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let (a_crt, a_key, b_key) = (
        file("a.crt", &a.cert_pem),
        file("a.key", &a.key_pem),
        file("b.key", &b.key_pem),
    );
    let junk = file("junk.pem", "not a certificate\n");
    let empty = file("empty.pem", "");
    for (lines, key) in [
        (format!("tls_cert = \"{a_crt}\""), "http.tls_key"),
        (format!("tls_key = \"{a_key}\""), "http.tls_cert"),
        (
            format!("tls_cert = \"{junk}\"\ntls_key = \"{a_key}\""),
            "http.tls_cert",
        ),
        (
            format!("tls_cert = \"{empty}\"\ntls_key = \"{a_key}\""),
            "http.tls_cert",
        ),
        (
            format!("tls_cert = \"{a_crt}\"\ntls_key = \"{a_crt}\""),
            "http.tls_key",
        ),
        (
            format!("tls_cert = \"{a_crt}\"\ntls_key = \"{b_key}\""),
            "http.tls_key",
        ),
        (
            format!("tls_cert = \"/nonexistent/x.crt\"\ntls_key = \"{a_key}\""),
            "http.tls_cert",
        ),
        (
            "trusted_proxies = [\"10.0.0.5\"]".to_string(),
            "http.trusted_proxies",
        ),
    ] {
        set_http(&gw.config, &format!("0.0.0.0:{port}"), &lines);
        let check = eldergate(&["check-config"], &gw.config);
        let text = said(&check);
        assert!(!check.status.success(), "{lines}: accepted");
        assert!(text.contains(key), "{lines}: {text}");
    }
    let bad_toml = "trusted_proxies = [\"not an address\"]";
    set_http(&gw.config, "127.0.0.1:1", bad_toml);
    assert!(!eldergate(&["check-config"], &gw.config).status.success());
}

/// Fails logins from 127.0.0.1 with `X-Forwarded-For` naming a different address each time, for
/// different accounts (so the per-account limit is not what refuses); the statuses.
async fn failed_logins_from_many_forwarded_addresses(gw: &Gateway, n: usize) -> Vec<u16> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut statuses = Vec::new();
    for i in 0..n {
        let r = client
            .post(gw.url("/console/login"))
            .header("x-forwarded-for", format!("203.0.113.{}", i % 250))
            .form(&[
                ("staff_id", format!("NOBODY{i}")),
                ("password", "wrong".into()),
            ])
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_forwarded_for_is_believed_only_from_a_declared_proxy() {
    let broker = Mosquitto::start().unwrap();
    let n = eldergate::auth::throttle::PER_ADDRESS + 3;

    // The test's requests come from 127.0.0.1, which is not the declared proxy: the header is
    // the client's own claim, ignored; the address limit applies to 127.0.0.1.
    let mut gw = Gateway::prepare(&spec(broker.port), None).unwrap();
    let port = gw.http_port;
    set_http(
        &gw.config,
        &format!("127.0.0.1:{port}"),
        "behind_proxy = true\ntrusted_proxies = [\"10.0.0.5\"]",
    );
    gw.spawn().await.unwrap();
    let statuses = failed_logins_from_many_forwarded_addresses(&gw, n).await;
    assert!(
        statuses.ends_with(&[429, 429, 429]),
        "the address limit holds whatever X-Forwarded-For says: {statuses:?}"
    );
    drop(gw);

    // 127.0.0.1 declared as the proxy: each forwarded address is a client of its own.
    let mut gw = Gateway::prepare(&spec(broker.port), None).unwrap();
    let port = gw.http_port;
    set_http(
        &gw.config,
        &format!("127.0.0.1:{port}"),
        "behind_proxy = true\ntrusted_proxies = [\"127.0.0.1\"]",
    );
    gw.spawn().await.unwrap();
    let statuses = failed_logins_from_many_forwarded_addresses(&gw, n).await;
    assert!(
        statuses.iter().all(|s| *s == 401),
        "behind the declared proxy the forwarded address is the client's: {statuses:?}"
    );
    // ... and a forwarded client is not loopback: /metrics is not open to it.
    let metrics = reqwest::Client::new()
        .get(gw.url("/metrics"))
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 401);
}

/// The concrete URL of a documented path: every `{param}` filled with a value that names nothing.
fn fill(path: &str) -> String {
    path.split('/')
        .map(|s| if s.starts_with('{') { "0" } else { s })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_is_served_behind_login_and_every_path_in_it_is_served() {
    let broker = Mosquitto::start().unwrap();
    let gw = Gateway::start(&spec(broker.port)).await.unwrap();
    let anonymous = reqwest::Client::new();
    let r = anonymous
        .get(gw.url("/api/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "behind login (docs/adr/0017)");
    let reader = gw.token_for("S012", "read").unwrap();
    let doc: serde_json::Value = anonymous
        .get(gw.url("/api/openapi.json"))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{doc}");
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 20, "{:?}", paths.keys());
    for p in ["/api/alerts/{id}/ack", "/api/roster", "/api/openapi.json"] {
        assert!(paths.contains_key(p), "{p}");
    }
    // Every documented operation is routed: with a credential that may do everything, the
    // answer is the handler's (a JSON refusal or success), never the router's empty 404 or 405.
    let admin = gw.api();
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            let url = gw.url(&fill(path));
            let req = match method.as_str() {
                "get" => admin.get(&url),
                "post" => admin.post(&url).json(&serde_json::json!({})),
                other => panic!("{other} {path}: an unexpected method"),
            };
            let r = req.timeout(Duration::from_secs(5)).send().await;
            let Ok(r) = r else {
                // The live stream does not end; its headers came, which is enough.
                assert_eq!(path, "/api/alerts/stream", "{method} {path}: {r:?}");
                continue;
            };
            let status = r.status().as_u16();
            assert_ne!(status, 405, "{method} {path} is documented but not routed");
            if status == 404 {
                let body = r.text().await.unwrap_or_default();
                assert!(
                    body.contains("error"),
                    "{method} {path} answered the router's 404: documented but not routed"
                );
            }
        }
    }
    // A path that is not in the document is not served either.
    let r = admin.get(gw.url("/api/undocumented")).send().await.unwrap();
    assert_eq!(r.status(), 404);
}
