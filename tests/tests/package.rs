//! The Debian package installs and starts. Built by deploy/debian/build-deb from the test build
//! of the binary, installed with the real dpkg into a throwaway root (`dpkg --root`, maintainer
//! scripts run chrootless and honour `DPKG_ROOT`, so the real postinst creates the `eldergate`
//! user with systemd-sysusers and the directories with systemd-tmpfiles inside that root), and
//! the installed binary is started from the root against a real Mosquitto. Why not a container:
//! there is no container engine here, and a root of our own with the real dpkg checks the same
//! things (files, modes, the maintainer scripts) without one. What it does not check: systemd as
//! PID 1 starting the unit (no systemd runs here); `systemd-analyze verify` checks the unit file.

use eldergate_e2e::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn run(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_debian_package_installs_into_a_fresh_root_and_its_binary_starts() {
    let uid = run(Command::new("id").arg("-u"));
    if uid.trim() != "0" {
        eprintln!("skipped: installing a package with dpkg --root needs root");
        return;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().unwrap();
    let deb = run(Command::new(repo.join("deploy/debian/build-deb"))
        .env("DEB_COMPRESS", "none")
        .arg(bin_dir().join("eldergate"))
        .arg(dir.path().join("dist")));
    let deb = deb.trim();
    let contents = run(Command::new("dpkg-deb").args(["--contents", deb]));
    for f in [
        "./usr/bin/eldergate",
        "./usr/lib/systemd/system/eldergate.service",
        "./usr/lib/systemd/system/eldergate-alert@.service",
        "./usr/lib/sysusers.d/eldergate.conf",
        "./usr/lib/tmpfiles.d/eldergate.conf",
        "./etc/eldergate/eldergate.toml.example",
        "./usr/share/eldergate/mosquitto/eldergate.conf",
    ] {
        assert!(
            contents.contains(f),
            "{f} missing from the package:\n{contents}"
        );
    }

    // A throwaway root with an empty dpkg database.
    let root = dir.path().join("root");
    for d in ["var/lib/dpkg/info", "var/lib/dpkg/updates", "etc"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\ndialout:x:20:\n").unwrap();
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    let out = run(Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args([
            "--force-script-chrootless",
            "--force-depends",
            "--log=/dev/null",
            "-i",
            deb,
        ]));
    assert!(out.contains("eldergate installed"), "{out}");
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert!(
        passwd.contains("eldergate:"),
        "sysusers made no user:\n{passwd}"
    );
    let group = std::fs::read_to_string(root.join("etc/group")).unwrap();
    assert!(
        group
            .lines()
            .any(|l| l.starts_with("dialout:") && l.contains("eldergate")),
        "eldergate is not in dialout:\n{group}"
    );
    let state = std::fs::metadata(root.join("var/lib/eldergate")).unwrap();
    assert_eq!(state.permissions().mode() & 0o777, 0o700);

    let verify = Command::new("systemd-analyze")
        .args(["verify", "--root"])
        .arg(&root)
        .arg(root.join("usr/lib/systemd/system/eldergate.service"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&verify.stderr);
    assert!(
        !said.contains("Unknown key")
            && !said.contains("Invalid")
            && !said.contains("Failed to parse"),
        "systemd-analyze verify: {said}"
    );

    // The installed binary: a wrong config exits 78 (EX_CONFIG; the unit does not restart it).
    let installed = root.join("usr/bin/eldergate");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "site_id = \"s\"\n").unwrap();
    let status = Command::new(&installed)
        .args(["run", "--config"])
        .arg(&bad)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(78));

    // ... and with a real config it starts, says ready, and stops cleanly on SIGTERM.
    let broker = Mosquitto::start().unwrap();
    let http = free_port();
    let config = root.join("etc/eldergate/eldergate.toml");
    std::fs::write(
        &config,
        format!(
            "site_id = \"s\"\ngateway_id = \"gw-pkg\"\ndata_dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:{http}\"\n[broker]\nmode = \"external\"\nurl = \"mqtt://127.0.0.1:{}\"\nanonymous = true\n[central]\nurl = \"sqlite:central.db\"\n[checkin]\nenabled = false\n[[staff]]\nid = \"S1\"\nname = \"Duty\"\nrole = \"duty\"\n[[staff]]\nid = \"S2\"\nname = \"Manager\"\nrole = \"manager\"\n",
            root.join("var/lib/eldergate").display(),
            broker.port
        ),
    )
    .unwrap();
    let mut child = Command::new(&installed)
        .args(["run", "--config"])
        .arg(&config)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{http}/readyz");
    let ready = eventually(Duration::from_secs(60), "/readyz 200", || async {
        let ok = reqwest::get(&url).await.is_ok_and(|r| r.status() == 200);
        Ok(ok.then_some(()))
    })
    .await;
    run(Command::new("kill").args(["-TERM", &child.id().to_string()]));
    let status = child.wait().unwrap();
    ready.unwrap();
    assert!(status.success(), "{status}");
    assert!(root.join("var/lib/eldergate/journal.db").exists());
}
