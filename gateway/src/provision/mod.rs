//! Broker access generated from the registry: `eldergate provision` writes the Mosquitto password
//! file, the ACL and a provisioning CSV for installers, so no one writes them by hand.
//!
//! Guarantees:
//! - Every MQTT identity the community needs gets its own username and a random secret: each
//!   device registered on the MQTT link (username = device id), the gateway (username =
//!   `gateway_id`) and every staff member (username = staff id). Serial devices get none.
//! - The ACL is regenerated from the registry on every run and grants each identity only its own
//!   topics, by device kind: a button writes `alarm/{id}`, a reader `tap/{id}`, every device
//!   `tele/{id}/#` and reads `down/{id}`; a staff member writes only `staff/cmd/{own id}` (the
//!   gateway takes the actor from that topic, so nobody can act as someone else) and reads the
//!   broadcast alerts, their own addressed alerts and the results. Anything not granted is denied
//!   (Mosquitto denies by default once an `acl_file` is set).
//! - Secrets are written once: a re-run keeps every existing password file line and CSV row and
//!   only adds identities that are new in the registry. Identities that left the registry keep
//!   their password line (listed as stale, to delete by hand) but get no ACL line, so they can do
//!   nothing. All files are written with mode 0600 (atomically: temp file, fsync, rename).
//! - Secrets are never logged or printed; only usernames and counts are.

use crate::community::{DeviceKind, Link};
use crate::config::Loaded;
use rand::distr::{Alphanumeric, SampleString};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

pub mod passwd;

/// File names written into the output directory.
pub const PASSWD_FILE: &str = "mosquitto.passwd";
/// The ACL (no secrets, but kept 0600 like the rest).
pub const ACL_FILE: &str = "mosquitto.acl";
/// For installers: `kind,id,username,password`.
pub const CSV_FILE: &str = "provisioning.csv";
/// `ELDERGATE__BROKER__PASSWORD=…` for the gateway's systemd `EnvironmentFile`.
pub const ENV_FILE: &str = "gateway.env";

/// Length of a generated secret (alphanumeric: ~143 bits).
const SECRET_LEN: usize = 24;

/// Why provisioning stopped (nothing was written).
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Two identities would share one broker username.
    #[error("{username:?} is both {first} and {second}; broker usernames must be unique — rename one of them")]
    Duplicate {
        /// The username.
        username: String,
        /// What it first was.
        first: &'static str,
        /// What it also is.
        second: &'static str,
    },
    /// An existing file has a line this tool cannot read.
    #[error("{path}, line {line}: {why}; fix or remove the line and run again")]
    BadLine {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        why: String,
    },
}

/// One MQTT identity of the community.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `gateway`, `staff`, or the device kind.
    pub kind: &'static str,
    /// Broker username (= device, staff or gateway id).
    pub username: String,
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Summary {
    /// Usernames given a new secret in this run.
    pub added: Vec<String>,
    /// Usernames whose existing secret was kept.
    pub kept: Vec<String>,
    /// Usernames in the password file that the registry no longer names (no ACL line).
    pub stale: Vec<String>,
    /// Where the files are.
    pub dir: PathBuf,
}

/// Every identity the registry names, gateway first, in a stable order.
pub fn identities(loaded: &Loaded) -> Result<Vec<Identity>, ProvisionError> {
    let mut out = vec![Identity {
        kind: "gateway",
        username: loaded.config.gateway_id.clone(),
    }];
    for d in loaded.devices.values().filter(|d| d.link == Link::Mqtt) {
        out.push(Identity {
            kind: d.kind.as_str(),
            username: d.id.clone(),
        });
    }
    for s in loaded.staff.values() {
        out.push(Identity {
            kind: "staff",
            username: s.id.clone(),
        });
    }
    let mut seen: BTreeMap<&str, &'static str> = BTreeMap::new();
    for i in &out {
        if let Some(first) = seen.insert(&i.username, i.kind) {
            return Err(ProvisionError::Duplicate {
                username: i.username.clone(),
                first,
                second: i.kind,
            });
        }
    }
    Ok(out)
}

/// The ACL for `loaded`'s registry (see the module's guarantees).
pub fn acl(loaded: &Loaded) -> String {
    let site = &loaded.config.site_id;
    let gw = &loaded.config.gateway_id;
    let base = format!("eldergate/v1/{site}");
    let mut a = format!(
        "# Generated by `eldergate provision` from the registry of site {site}. Do not edit: change\n\
         # the registry (devices, staff) and run it again. Anything not granted here is denied.\n\n\
         # The gateway (any version on the way in, so a wrong version is dead-lettered, not lost).\n\
         user {gw}\n\
         topic read eldergate/+/{site}/alarm/#\n\
         topic read eldergate/+/{site}/tele/#\n\
         topic read eldergate/+/{site}/tap/#\n\
         topic read eldergate/+/{site}/staff/cmd/+\n\
         topic write {base}/down/#\n\
         topic write {base}/staff/alerts\n\
         topic write {base}/staff/alerts/#\n\
         topic write {base}/staff/results\n\
         topic write {base}/gw/{gw}/status\n"
    );
    for d in loaded.devices.values().filter(|d| d.link == Link::Mqtt) {
        let id = &d.id;
        a.push_str(&format!("\n# {} {id}\nuser {id}\n", d.kind.as_str()));
        match d.kind {
            DeviceKind::AlarmButton => a.push_str(&format!("topic write {base}/alarm/{id}\n")),
            DeviceKind::CardReader => a.push_str(&format!("topic write {base}/tap/{id}\n")),
            // Kiosk readings travel as telemetry (below) until their own topic lands.
            DeviceKind::HealthKiosk => {}
        }
        a.push_str(&format!(
            "topic write {base}/tele/{id}/#\ntopic read {base}/down/{id}\n"
        ));
    }
    for s in loaded.staff.values() {
        let id = &s.id;
        a.push_str(&format!(
            "\n# staff {id} ({})\nuser {id}\n\
             topic write {base}/staff/cmd/{id}\n\
             topic read {base}/staff/alerts\n\
             topic read {base}/staff/alerts/{id}\n\
             topic read {base}/staff/results\n",
            s.role
        ));
    }
    a
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ProvisionError + '_ {
    move |source| ProvisionError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn read_optional(path: &Path) -> Result<String, ProvisionError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(io(path)(e)),
    }
}

/// Writes `text` to `path` with mode 0600: a temp file beside it, fsync, rename.
fn write_private(path: &Path, text: &str) -> Result<(), ProvisionError> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    // An old temp file keeps its mode; make sure.
    use std::os::unix::fs::PermissionsExt;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(io(&tmp))?;
    f.write_all(text.as_bytes()).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// Existing password file lines: username → whole line, in file order.
fn read_passwd(path: &Path) -> Result<Vec<(String, String)>, ProvisionError> {
    let mut out = Vec::new();
    for (n, line) in read_optional(path)?.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((user, _)) = line.split_once(':') else {
            return Err(ProvisionError::BadLine {
                path: path.to_path_buf(),
                line: n + 1,
                why: "not `username:hash`".into(),
            });
        };
        out.push((user.to_string(), line.to_string()));
    }
    Ok(out)
}

/// Existing provisioning rows: username → (kind, id, password).
fn read_csv(path: &Path) -> Result<BTreeMap<String, [String; 3]>, ProvisionError> {
    let mut out = BTreeMap::new();
    for (n, line) in read_optional(path)?.lines().enumerate() {
        if n == 0 || line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').collect();
        let [kind, id, user, pw] = f[..] else {
            return Err(ProvisionError::BadLine {
                path: path.to_path_buf(),
                line: n + 1,
                why: "not `kind,id,username,password`".into(),
            });
        };
        out.insert(user.to_string(), [kind.into(), id.into(), pw.into()]);
    }
    Ok(out)
}

/// Writes (or completes) the broker access files for `loaded` in `dir` (see the module doc).
pub fn provision(loaded: &Loaded, dir: &Path) -> Result<Summary, ProvisionError> {
    let wanted = identities(loaded)?;
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let passwd_path = dir.join(PASSWD_FILE);
    let csv_path = dir.join(CSV_FILE);
    let mut lines = read_passwd(&passwd_path)?;
    let mut rows = read_csv(&csv_path)?;
    let mut summary = Summary {
        dir: dir.to_path_buf(),
        ..Summary::default()
    };
    for who in &wanted {
        if lines.iter().any(|(u, _)| u == &who.username) {
            summary.kept.push(who.username.clone());
            continue;
        }
        // A secret already handed out (in the CSV) is kept even if its hash line was lost.
        let secret = match rows.get(&who.username) {
            Some([_, _, pw]) => {
                summary.kept.push(who.username.clone());
                pw.clone()
            }
            None => {
                summary.added.push(who.username.clone());
                let pw = Alphanumeric.sample_string(&mut rand::rng(), SECRET_LEN);
                rows.insert(
                    who.username.clone(),
                    [who.kind.into(), who.username.clone(), pw.clone()],
                );
                pw
            }
        };
        lines.push((
            who.username.clone(),
            format!("{}:{}", who.username, passwd::hash(&secret)),
        ));
    }
    summary.stale = lines
        .iter()
        .filter(|(u, _)| !wanted.iter().any(|w| &w.username == u))
        .map(|(u, _)| u.clone())
        .collect();

    let mut passwd_text = String::new();
    for (_, line) in &lines {
        passwd_text.push_str(line);
        passwd_text.push('\n');
    }
    let mut csv = String::from("kind,id,username,password\n");
    for (user, [kind, id, pw]) in &rows {
        csv.push_str(&format!("{kind},{id},{user},{pw}\n"));
    }
    write_private(&passwd_path, &passwd_text)?;
    write_private(&csv_path, &csv)?;
    write_private(&dir.join(ACL_FILE), &acl(loaded))?;
    if let Some([_, _, pw]) = rows.get(&loaded.config.gateway_id) {
        write_private(
            &dir.join(ENV_FILE),
            &format!(
                "# The gateway's broker secret (eldergate provision). Mode 0600.\nELDERGATE__BROKER__PASSWORD={pw}\n"
            ),
        )?;
    }
    Ok(summary)
}

#[cfg(test)]
mod tests;
