//! A private PostgreSQL cluster for one test, with TLS only: `initdb` into a temporary directory
//! as the `postgres` user (PostgreSQL refuses to run as root), `ssl = on` with a certificate
//! made in the test, `hostssl` lines only in pg_hba.conf (TCP without TLS is refused), a free
//! loopback port, and its Unix socket in the same directory for the test's own queries. The
//! shared cluster on 5432 is not touched.

use anyhow::{bail, Context};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running private cluster; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct PrivatePg {
    /// TCP port on 127.0.0.1 (TLS only).
    pub port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

fn pg_bin(name: &str) -> anyhow::Result<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL server binaries not found under /usr/lib/postgresql")?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    versions.sort();
    let bin = versions
        .last()
        .map(|v| v.join("bin").join(name))
        .context("no PostgreSQL version under /usr/lib/postgresql")?;
    Ok(bin)
}

fn postgres_ids() -> anyhow::Result<(u32, u32)> {
    let id = |flag: &str| -> anyhow::Result<u32> {
        let out = Command::new("id").args([flag, "postgres"]).output()?;
        if !out.status.success() {
            bail!(
                "there is no postgres user: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
    };
    Ok((id("-u")?, id("-g")?))
}

impl PrivatePg {
    /// initdb + start with `cert_pem` / `key_pem` as the server's certificate.
    pub fn start(cert_pem: &str, key_pem: &str) -> anyhow::Result<PrivatePg> {
        let (uid, gid) = postgres_ids()?;
        let dir = tempfile::Builder::new().prefix("eg-pg-").tempdir()?;
        let data = dir.path().join("data");
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))?;
        let out = Command::new(pg_bin("initdb")?)
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
            .arg("-D")
            .arg(&data)
            .uid(uid)
            .gid(gid)
            .current_dir(dir.path())
            .output()?;
        if !out.status.success() {
            bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let write = |name: &str, text: &str| -> anyhow::Result<()> {
            let p = data.join(name);
            std::fs::write(&p, text)?;
            std::os::unix::fs::chown(&p, Some(uid), Some(gid))?;
            std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
            Ok(())
        };
        write("server.crt", cert_pem)?;
        write("server.key", key_pem)?;
        write(
            "pg_hba.conf",
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostssl all all ::1/128 trust\n",
        )?;
        let port = crate::free_port();
        let log = std::fs::File::create(dir.path().join("postgres.log"))?;
        let child = Command::new(pg_bin("postgres")?)
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", dir.path().display()))
            .args(["-c", "ssl=on", "-c", "ssl_cert_file=server.crt"])
            .args(["-c", "ssl_key_file=server.key", "-c", "fsync=off"])
            .uid(uid)
            .gid(gid)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let pg = PrivatePg { port, child, dir };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                && pg.dir.path().join(format!(".s.PGSQL.{port}")).exists()
            {
                return Ok(pg);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("private PostgreSQL did not start:\n{}", pg.log())
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    /// A URL for the test's own queries over the Unix socket (no TLS needed: `local` lines).
    pub fn socket_url(&self) -> String {
        format!(
            "postgres://postgres@localhost:{}/postgres?host={}",
            self.port,
            self.dir.path().display()
        )
    }

    /// The directory holding the cluster (the CA files of a test can go here too).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
