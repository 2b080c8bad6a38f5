//! The district's central PostgreSQL, as its operator sets it up (docs/adr/0014): the schema is
//! migrated by the migrator role, each gateway gets a login role of its own that may only INSERT
//! and SELECT its own rows, dashboards get a read-only role.
//!
//! Guarantees:
//! - [`add_gateway`] creates the gateway's role with a random password that is returned to the
//!   caller only (written to a 0600 file by `eldergate central add-gateway`, never printed or
//!   logged) and registers it in `gateways`, in one transaction: a role without its row (or a
//!   row without its role) is never left behind.
//! - A gateway id or role name is never pasted into SQL unchecked: ids are checked with the topic
//!   rules (letters, digits, `-`, `_`, `.`) and identifiers are quoted.

use std::io::Write;
use std::path::Path;

use eldergate_protocol::topic::is_valid_id;
use rand::RngCore;
use sqlx::PgPool;

/// Why a district operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DistrictError {
    /// The gateway or site id is not a valid id.
    #[error("{0:?} is not a valid id (letters, digits, '-', '_', '.'; at most 64)")]
    BadId(String),
    /// The database refused.
    #[error("central store: {0}")]
    Db(#[from] sqlx::Error),
    /// The password file could not be written (it must not exist yet).
    #[error("cannot write the password file {path}: {source}")]
    PasswordFile {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// The login role name of a gateway: `eldergate_gw_<gateway id>`.
pub fn role_of(gateway_id: &str) -> String {
    format!("eldergate_gw_{gateway_id}")
}

/// A quoted SQL identifier.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Creates the login role of a gateway (member of `eldergate_gateway`) with a new random
/// password and registers it for `gateway_id` and `site_id`. Returns (role, password).
pub async fn add_gateway(
    pool: &PgPool,
    gateway_id: &str,
    site_id: &str,
) -> Result<(String, String), DistrictError> {
    for id in [gateway_id, site_id] {
        if !is_valid_id(id) {
            return Err(DistrictError::BadId(id.to_string()));
        }
    }
    let role = role_of(gateway_id);
    let mut secret = [0u8; 24];
    rand::rng().fill_bytes(&mut secret);
    let password: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let mut tx = pool.begin().await?;
    // A utility statement takes no parameters; the password is hex, the role name quoted.
    sqlx::query(&format!(
        "CREATE ROLE {} LOGIN PASSWORD '{password}' IN ROLE eldergate_gateway",
        ident(&role)
    ))
    .execute(&mut *tx)
    .await?;
    sqlx::query("INSERT INTO gateways (gateway_id, site_id, role_name) VALUES ($1, $2, $3)")
        .bind(gateway_id)
        .bind(site_id)
        .bind(&role)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok((role, password))
}

/// Writes a secret to a new file, mode 0600, fsynced; refuses to overwrite one.
pub fn write_secret_file(path: &Path, secret: &str) -> Result<(), DistrictError> {
    let fail = |source| DistrictError::PasswordFile {
        path: path.display().to_string(),
        source,
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(fail)?;
    f.write_all(secret.as_bytes()).map_err(fail)?;
    f.write_all(b"\n").map_err(fail)?;
    f.sync_all().map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_so_a_name_cannot_end_the_statement() {
        assert_eq!(
            ident("a\"; DROP TABLE events; --"),
            "\"a\"\"; DROP TABLE events; --\""
        );
    }

    #[test]
    fn a_secret_file_is_private_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        write_secret_file(&p, "s3cret").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        assert!(write_secret_file(&p, "other").is_err());
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "s3cret\n");
    }
}
