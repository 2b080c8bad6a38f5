//! Card MACs: a reader that can compute one sends it with the tap, and the gateway refuses a tap
//! whose MAC does not match as a cloned card (a bare UID is easily copied onto a "magic" card).
//!
//! The scheme (docs/CANTEEN.md "Card MAC"):
//! - per-card key `K = HMAC-SHA256(site_secret, "eldergate-card-key-v1" ‖ card_id)`, where
//!   `card_id` is the roster card id (upper-case hex ASCII, SPEC.md §6.5); `K` is written to the
//!   card when it is issued, so a card holds only its own key;
//! - tap MAC = the first 8 bytes of `HMAC-SHA256(K, "eldergate-tap-v1" ‖ reader ‖ 0x00 ‖
//!   seq as u32 big-endian ‖ card_id)`, sent as 16 hex digits on MQTT (`mac`) and as 8 bytes on
//!   serial (`mac_len` = 8). The reader's seq is the challenge: a MAC recorded once does not
//!   settle a second tap.
//!
//! Guarantees: the site secret comes from a file (`canteen.card_mac_secret_file`, or the
//! environment variable `ELDERGATE_CANTEEN__CARD_MAC_SECRET_FILE`), is at least 16 bytes, and is
//! never logged or printed (`Debug` shows only its length); MACs are compared in constant time.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::path::Path;

type HmacSha256 = Hmac<Sha256>;

/// Bytes of a tap MAC.
pub const TAP_MAC_LEN: usize = 8;

/// The site secret the per-card keys are derived from.
#[derive(Clone)]
pub struct SiteSecret(Vec<u8>);

impl std::fmt::Debug for SiteSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SiteSecret({} bytes, not shown)", self.0.len())
    }
}

/// Why a secret file was not taken (the message never contains the secret).
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file cannot be read.
    #[error("cannot read the card MAC secret file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Too short to be a secret.
    #[error("the card MAC secret file {path} holds {len} bytes; it needs at least 16 (e.g. `head -c 32 /dev/urandom | xxd -p -c 64 > {path}`)")]
    TooShort {
        /// The file.
        path: String,
        /// Its length after trimming.
        len: usize,
    },
}

/// What a tap's MAC says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacCheck {
    /// The reader sent no MAC.
    Absent,
    /// It matches the card's key.
    Valid,
    /// It does not (or is not 8 bytes / 16 hex digits): a cloned card or a broken reader.
    Mismatch,
    /// A MAC was sent but this gateway has no site secret to check it with.
    Unchecked,
}

impl SiteSecret {
    /// Reads the secret from `path` (surrounding whitespace trimmed).
    pub fn load(path: &Path) -> Result<SiteSecret, SecretError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| SecretError::Read {
            path: shown.clone(),
            source,
        })?;
        SiteSecret::new(bytes.trim_ascii().to_vec())
            .map_err(|len| SecretError::TooShort { path: shown, len })
    }

    /// A secret from bytes; Err(len) when shorter than 16 bytes.
    pub fn new(bytes: Vec<u8>) -> Result<SiteSecret, usize> {
        if bytes.len() < 16 {
            return Err(bytes.len());
        }
        Ok(SiteSecret(bytes))
    }

    /// The per-card key of `card_id` (roster form, upper-case hex).
    pub fn card_key(&self, card_id: &str) -> [u8; 32] {
        let mut m = keyed(&self.0);
        m.update(b"eldergate-card-key-v1");
        m.update(card_id.as_bytes());
        m.finalize().into_bytes().into()
    }

    /// The MAC a genuine card computes for this tap (what a test reader or the simulator sends).
    pub fn tap_mac(&self, reader: &str, seq: u32, card_id: &str) -> [u8; TAP_MAC_LEN] {
        let full = tap_hmac(&self.card_key(card_id), reader, seq, card_id).finalize();
        let mut out = [0u8; TAP_MAC_LEN];
        out.copy_from_slice(&full.into_bytes()[..TAP_MAC_LEN]);
        out
    }
}

fn keyed(key: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length: this never fails.
    match <HmacSha256 as Mac>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    }
}

fn tap_hmac(card_key: &[u8], reader: &str, seq: u32, card_id: &str) -> HmacSha256 {
    let mut m = keyed(card_key);
    m.update(b"eldergate-tap-v1");
    m.update(reader.as_bytes());
    m.update(&[0]);
    m.update(&seq.to_be_bytes());
    m.update(card_id.as_bytes());
    m
}

/// Checks a tap's MAC (`mac_hex`: as sent, hex) against the card's key.
pub fn check(
    secret: Option<&SiteSecret>,
    reader: &str,
    seq: u32,
    card_id: &str,
    mac_hex: Option<&str>,
) -> MacCheck {
    let Some(mac_hex) = mac_hex.filter(|m| !m.is_empty()) else {
        return MacCheck::Absent;
    };
    let Some(secret) = secret else {
        return MacCheck::Unchecked;
    };
    let Some(tag) = from_hex(mac_hex).filter(|t| t.len() == TAP_MAC_LEN) else {
        return MacCheck::Mismatch;
    };
    let m = tap_hmac(&secret.card_key(card_id), reader, seq, card_id);
    if m.verify_truncated_left(&tag).is_ok() {
        MacCheck::Valid
    } else {
        MacCheck::Mismatch
    }
}

/// Bytes as upper-case hex.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> SiteSecret {
        SiteSecret::new(b"0123456789abcdef-site".to_vec()).unwrap()
    }

    #[test]
    fn a_genuine_mac_is_valid_and_any_change_is_a_mismatch() {
        let s = secret();
        let mac = to_hex(&s.tap_mac("rdr-01", 7, "1DDCCF2D"));
        let check = |r: &str, seq: u32, card: &str, m: &str| check(Some(&s), r, seq, card, Some(m));
        assert_eq!(check("rdr-01", 7, "1DDCCF2D", &mac), MacCheck::Valid);
        assert_eq!(
            check("rdr-01", 7, "1DDCCF2D", &mac.to_lowercase()),
            MacCheck::Valid
        );
        assert_eq!(
            check("rdr-01", 8, "1DDCCF2D", &mac),
            MacCheck::Mismatch,
            "replayed under another seq"
        );
        assert_eq!(
            check("rdr-02", 7, "1DDCCF2D", &mac),
            MacCheck::Mismatch,
            "another reader"
        );
        assert_eq!(
            check("rdr-01", 7, "1DDCCF2E", &mac),
            MacCheck::Mismatch,
            "a cloned UID without the key"
        );
        assert_eq!(
            check("rdr-01", 7, "1DDCCF2D", &mac[..8]),
            MacCheck::Mismatch,
            "too short"
        );
        assert_eq!(check("rdr-01", 7, "1DDCCF2D", "zz"), MacCheck::Mismatch);
        assert_eq!(check("rdr-01", 7, "1DDCCF2D", "é0"), MacCheck::Mismatch);
        let other = SiteSecret::new(b"another site's secret".to_vec()).unwrap();
        assert_eq!(
            super::check(Some(&other), "rdr-01", 7, "1DDCCF2D", Some(&mac)),
            MacCheck::Mismatch
        );
        assert_eq!(
            super::check(None, "rdr-01", 7, "1DDCCF2D", Some(&mac)),
            MacCheck::Unchecked
        );
        assert_eq!(
            super::check(Some(&s), "rdr-01", 7, "1DDCCF2D", None),
            MacCheck::Absent
        );
    }

    #[test]
    fn the_secret_is_never_shown_and_must_be_long_enough() {
        let s = secret();
        assert!(!format!("{s:?}").contains("0123"));
        assert_eq!(SiteSecret::new(b"short".to_vec()).unwrap_err(), 5);
    }
}
