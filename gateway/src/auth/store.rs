//! `accounts.db` beside the journal: password hashes (argon2id), one-time invites, API tokens
//! and console sessions.
//!
//! Why not the journal: credentials are not events. They must never be forwarded to the central
//! store, and a password change or a revoked session is not something to replay. The journal's
//! writer stays the one owner of the journal; this store is owned by the auth module and written
//! by the gateway (sessions) and the `eldergate user` / `eldergate token` commands (SQLite WAL,
//! `synchronous=FULL`, a busy timeout so both can write).
//!
//! Guarantees: no password, invite or token is stored, only its hash (argon2id for passwords,
//! SHA-256 for random 256-bit secrets); a password change or `user revoke` ends every session
//! of that staff member at once (sessions are rows, checked on every request).

use super::AuthError;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use std::path::Path;
use std::time::Duration;

/// Shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 10;

/// Longest password accepted (argon2 hashes anything, but a megabyte "password" is an attack).
pub const MAX_PASSWORD_CHARS: usize = 256;

/// How long a one-time invite link is valid.
pub const INVITE_VALID_S: i64 = 72 * 3600;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS accounts (staff_id TEXT PRIMARY KEY, password_hash TEXT NOT NULL, set_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS invites (token_hash TEXT PRIMARY KEY, staff_id TEXT NOT NULL, expires_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS api_tokens (token_hash TEXT PRIMARY KEY, staff_id TEXT NOT NULL, name TEXT NOT NULL UNIQUE, scopes TEXT NOT NULL, created_at INTEGER NOT NULL, revoked_at INTEGER);
CREATE TABLE IF NOT EXISTS sessions (id_hash TEXT PRIMARY KEY, staff_id TEXT NOT NULL, csrf TEXT NOT NULL, created_at INTEGER NOT NULL, last_seen INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS sessions_staff ON sessions (staff_id);
";

/// A session found by its cookie.
#[derive(Debug, Clone)]
pub struct SessionRow {
    /// Staff id.
    pub staff_id: String,
    /// The session's CSRF token.
    pub csrf: String,
}

/// An API token found by its secret.
#[derive(Debug, Clone)]
pub struct TokenRow {
    /// Staff id the token acts as.
    pub staff_id: String,
    /// Its scopes, comma separated.
    pub scopes: String,
}

/// The accounts database.
#[derive(Clone, Debug)]
pub struct AccountStore {
    pool: SqlitePool,
}

/// A random 256-bit secret, hex.
pub fn new_secret() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// Seconds since the Unix epoch.
pub fn now_s() -> i64 {
    jiff::Timestamp::now().as_second()
}

impl AccountStore {
    /// Opens (creating) `data_dir/accounts.db`.
    pub async fn open(data_dir: &Path) -> Result<AccountStore, AuthError> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            AuthError::Store(format!(
                "cannot create data_dir {}: {e}",
                data_dir.display()
            ))
        })?;
        let opts = SqliteConnectOptions::new()
            .filename(data_dir.join("accounts.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await?;
        sqlx::raw_sql(SCHEMA).execute(&pool).await?;
        Ok(AccountStore { pool })
    }

    /// Sets `staff_id`'s password (argon2id) and ends their sessions.
    pub async fn set_password(&self, staff_id: &str, password: &str) -> Result<(), AuthError> {
        let n = password.chars().count();
        if !(MIN_PASSWORD_CHARS..=MAX_PASSWORD_CHARS).contains(&n) {
            return Err(AuthError::WeakPassword);
        }
        let password = password.to_string();
        let hash = tokio::task::spawn_blocking(move || {
            let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
            Argon2::default()
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
        })
        .await
        .map_err(|e| AuthError::Store(e.to_string()))?
        .map_err(|e| AuthError::Store(format!("cannot hash the password: {e}")))?;
        sqlx::query("INSERT INTO accounts (staff_id, password_hash, set_at) VALUES (?, ?, ?) ON CONFLICT (staff_id) DO UPDATE SET password_hash = excluded.password_hash, set_at = excluded.set_at")
            .bind(staff_id)
            .bind(hash)
            .bind(now_s())
            .execute(&self.pool)
            .await?;
        self.end_sessions_of(staff_id).await?;
        Ok(())
    }

    /// Whether `password` is `staff_id`'s. A staff id without a password costs the same time
    /// as a wrong password (no account enumeration by timing).
    pub async fn verify_password(&self, staff_id: &str, password: &str) -> Result<bool, AuthError> {
        if password.chars().count() > MAX_PASSWORD_CHARS {
            return Ok(false);
        }
        let stored: Option<String> =
            sqlx::query_scalar("SELECT password_hash FROM accounts WHERE staff_id = ?")
                .bind(staff_id)
                .fetch_optional(&self.pool)
                .await?;
        let known = stored.is_some();
        let password = password.to_string();
        let ok = tokio::task::spawn_blocking(move || {
            // The hash of a random secret, verified when the account has none.
            static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
            let hash = stored.unwrap_or_else(|| {
                DUMMY
                    .get_or_init(|| {
                        let salt =
                            SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
                        Argon2::default()
                            .hash_password(new_secret().as_bytes(), &salt)
                            .map(|h| h.to_string())
                            .unwrap_or_default()
                    })
                    .clone()
            });
            match PasswordHash::new(&hash) {
                Ok(h) => Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok(),
                Err(_) => false,
            }
        })
        .await
        .map_err(|e| AuthError::Store(e.to_string()))?;
        Ok(known && ok)
    }

    /// A one-time invite for `staff_id`: the secret to put in the link (stored hashed).
    pub async fn create_invite(&self, staff_id: &str) -> Result<String, AuthError> {
        let secret = new_secret();
        sqlx::query("INSERT INTO invites (token_hash, staff_id, expires_at) VALUES (?, ?, ?)")
            .bind(sha256_hex(&secret))
            .bind(staff_id)
            .bind(now_s() + INVITE_VALID_S)
            .execute(&self.pool)
            .await?;
        Ok(secret)
    }

    /// Uses an invite once: sets the password and returns the staff id.
    pub async fn redeem_invite(&self, secret: &str, password: &str) -> Result<String, AuthError> {
        let n = password.chars().count();
        if !(MIN_PASSWORD_CHARS..=MAX_PASSWORD_CHARS).contains(&n) {
            return Err(AuthError::WeakPassword);
        }
        let row = sqlx::query(
            "DELETE FROM invites WHERE token_hash = ? AND expires_at > ? RETURNING staff_id",
        )
        .bind(sha256_hex(secret))
        .bind(now_s())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Err(AuthError::BadInvite);
        };
        let staff: String = row.try_get(0)?;
        self.set_password(&staff, password).await?;
        Ok(staff)
    }

    /// A new API token for `staff_id` with `scopes`: the secret, shown once.
    pub async fn create_token(
        &self,
        staff_id: &str,
        name: &str,
        scopes: &str,
    ) -> Result<String, AuthError> {
        let secret = format!("egt_{}", new_secret());
        sqlx::query("INSERT INTO api_tokens (token_hash, staff_id, name, scopes, created_at) VALUES (?, ?, ?, ?, ?)")
            .bind(sha256_hex(&secret))
            .bind(staff_id)
            .bind(name)
            .bind(scopes)
            .bind(now_s())
            .execute(&self.pool)
            .await
            .map_err(|e| match e {
                sqlx::Error::Database(d) if d.is_unique_violation() => {
                    AuthError::Store(format!("a token named {name:?} exists; revoke it or pick another name"))
                }
                e => e.into(),
            })?;
        Ok(secret)
    }

    /// Revokes the token named `name`; false when there is none.
    pub async fn revoke_token(&self, name: &str) -> Result<bool, AuthError> {
        let done = sqlx::query(
            "UPDATE api_tokens SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
        )
        .bind(now_s())
        .bind(name)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The live token with this secret.
    pub async fn token(&self, secret: &str) -> Result<Option<TokenRow>, AuthError> {
        let row = sqlx::query(
            "SELECT staff_id, scopes FROM api_tokens WHERE token_hash = ? AND revoked_at IS NULL",
        )
        .bind(sha256_hex(secret))
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(r) => Some(TokenRow {
                staff_id: r.try_get(0)?,
                scopes: r.try_get(1)?,
            }),
            None => None,
        })
    }

    /// A new session for `staff_id`: (cookie secret, CSRF token).
    pub async fn create_session(&self, staff_id: &str) -> Result<(String, String), AuthError> {
        let (sid, csrf) = (new_secret(), new_secret());
        let now = now_s();
        sqlx::query("INSERT INTO sessions (id_hash, staff_id, csrf, created_at, last_seen) VALUES (?, ?, ?, ?, ?)")
            .bind(sha256_hex(&sid))
            .bind(staff_id)
            .bind(&csrf)
            .bind(now)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok((sid, csrf))
    }

    /// The session with this cookie if it is within both expiries; touches it (at most once
    /// every 30 s, so reads stay reads). An expired session is deleted.
    pub async fn session(
        &self,
        sid: &str,
        idle_s: i64,
        max_s: i64,
    ) -> Result<Option<SessionRow>, AuthError> {
        let key = sha256_hex(sid);
        let row = sqlx::query(
            "SELECT staff_id, csrf, created_at, last_seen FROM sessions WHERE id_hash = ?",
        )
        .bind(&key)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let (created, seen): (i64, i64) = (row.try_get(2)?, row.try_get(3)?);
        let now = now_s();
        if now - seen > idle_s || now - created > max_s {
            sqlx::query("DELETE FROM sessions WHERE id_hash = ?")
                .bind(&key)
                .execute(&self.pool)
                .await?;
            return Ok(None);
        }
        if now - seen >= 30 {
            sqlx::query("UPDATE sessions SET last_seen = ? WHERE id_hash = ?")
                .bind(now)
                .bind(&key)
                .execute(&self.pool)
                .await?;
        }
        Ok(Some(SessionRow {
            staff_id: row.try_get(0)?,
            csrf: row.try_get(1)?,
        }))
    }

    /// Ends one session (logout).
    pub async fn end_session(&self, sid: &str) -> Result<(), AuthError> {
        sqlx::query("DELETE FROM sessions WHERE id_hash = ?")
            .bind(sha256_hex(sid))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Ends every session of `staff_id` (password change, `eldergate user revoke`).
    pub async fn end_sessions_of(&self, staff_id: &str) -> Result<u64, AuthError> {
        let done = sqlx::query("DELETE FROM sessions WHERE staff_id = ?")
            .bind(staff_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
