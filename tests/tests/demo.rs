//! The README's first command, `cargo run -p eldergate-sim -- demo`, end to end: the gateway with
//! its embedded broker and embedded central store, the simulated buttons (MQTT and a serial pty),
//! the reader terminal, the kiosk and the duty worker — what it promises to print, a gateway that
//! answers at the printed address, and a clean stop on Ctrl-C with no ERROR in its output.
//! Nothing else in the suite runs the demo, and the README must stay true in every commit.

use eldergate_e2e::*;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Long enough for the kiosk's first session (every ~20 s) on a loaded machine.
const WAIT: Duration = Duration::from_secs(240);

/// Something the demo promises, and how its output line shows it.
type Promise = (&'static str, fn(&str) -> bool);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_says_what_to_watch_and_stops_cleanly_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(bin_dir().join("eldergate-sim"))
        .arg("demo")
        .arg("--data-dir")
        .arg(dir.path().join("demo"))
        .args([
            "--press-every",
            "0.5",
            "--tap-every",
            "1",
            "--ack-after",
            "1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Read beside it, so a full pipe never holds the demo up.
    let mut stderr = child.stderr.take().unwrap();
    let err = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s).await;
        s
    });
    let mut said = String::new();
    // Each thing the banner announces, as the demo's own lines show it.
    let wanted: [Promise; 6] = [
        ("the banner", |l| {
            l.contains("=== eldergate demo is running")
        }),
        ("the health address", |l| l.starts_with("Metrics: http://")),
        ("an alarm raised", |l| {
            l.starts_with("[alert") && l.contains(" RAISED ")
        }),
        ("the duty worker's acknowledgement", |l| {
            l.starts_with("[alert") && l.contains(" ACKNOWLEDGED ")
        }),
        ("the reader's display", |l| {
            l.starts_with("[display rdr-04]")
        }),
        ("a kiosk reading saved", |l| {
            l.starts_with("[kiosk kiosk-01]") && l.contains("saved")
        }),
    ];
    let mut seen = [false; 6];
    let mut health = None;
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            said.push_str(&line);
            said.push('\n');
            if let Some(rest) = line.strip_prefix("Metrics: ") {
                health = rest
                    .split_whitespace()
                    .find(|w| w.ends_with("/healthz"))
                    .map(str::to_string);
            }
            for (i, (_, matches)) in wanted.iter().enumerate() {
                seen[i] |= matches(&line);
            }
            if seen.iter().all(|s| *s) {
                break;
            }
        }
    };
    let finished = tokio::time::timeout(WAIT, read).await.is_ok();
    let missing: Vec<&str> = wanted
        .iter()
        .zip(seen)
        .filter(|(_, s)| !s)
        .map(|((what, _), _)| *what)
        .collect();
    assert!(
        finished && missing.is_empty(),
        "missing {missing:?}:\n{said}"
    );
    let health = health.expect("a /healthz address in the banner");
    let r = reqwest::get(&health).await.unwrap();
    assert_eq!(r.status(), 200, "{health}");

    // Ctrl-C: the demo stops its devices, the gateway drains, and it says where its data stays.
    let pid = child.id().unwrap();
    let status = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let rest = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            said.push_str(&line);
            said.push('\n');
        }
        child.wait().await.unwrap()
    };
    let exit = tokio::time::timeout(Duration::from_secs(60), rest)
        .await
        .expect("the demo exits within 60 s of Ctrl-C");
    let err = err.await.unwrap_or_default();
    assert!(exit.success(), "{exit}\n{said}\n{err}");
    assert!(said.contains("demo stopped"), "{said}");
    for line in said.lines().chain(err.lines()) {
        assert!(
            !line.contains(" ERROR ") && !line.contains("panicked"),
            "an error in the demo's output: {line}\n{said}\n{err}"
        );
    }
}
