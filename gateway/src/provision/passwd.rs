//! Mosquitto password file entries in the format `mosquitto_passwd` writes (Mosquitto ≥ 2.0):
//! `user:$7$101$<salt, base64>$<PBKDF2-HMAC-SHA512, 64 bytes, base64>` with a 12-byte random salt
//! and 101 iterations. Checked against the real broker in tests/tests/production.rs.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha512;

/// Iterations Mosquitto uses (`PW_DEFAULT_ITERATIONS`).
pub const ITERATIONS: u32 = 101;
const SALT_LEN: usize = 12;
const HASH_LEN: usize = 64;

/// PBKDF2-HMAC-SHA512 with one output block (64 bytes, the digest size).
fn pbkdf2_sha512(password: &[u8], salt: &[u8], iterations: u32) -> [u8; HASH_LEN] {
    let mut out = [0u8; HASH_LEN];
    // HMAC takes a key of any length, so `new_from_slice` cannot fail.
    let Ok(prf) = Hmac::<Sha512>::new_from_slice(password) else {
        return out;
    };
    let mut mac = prf.clone();
    mac.update(salt);
    mac.update(&1u32.to_be_bytes());
    let mut u: [u8; HASH_LEN] = mac.finalize().into_bytes().into();
    out = u;
    for _ in 1..iterations {
        let mut mac = prf.clone();
        mac.update(&u);
        u = mac.finalize().into_bytes().into();
        for (o, x) in out.iter_mut().zip(u.iter()) {
            *o ^= x;
        }
    }
    out
}

/// The hash part of a password file line (`$7$…`) with the given salt.
pub fn hash_with_salt(password: &str, salt: &[u8]) -> String {
    let hash = pbkdf2_sha512(password.as_bytes(), salt, ITERATIONS);
    format!(
        "$7${ITERATIONS}${}${}",
        STANDARD.encode(salt),
        STANDARD.encode(hash)
    )
}

/// The hash part of a password file line, with a fresh random salt.
pub fn hash(password: &str) -> String {
    let mut salt = [0u8; SALT_LEN];
    rand::rng().fill_bytes(&mut salt);
    hash_with_salt(password, &salt)
}

/// True when `encoded` (`$7$iterations$salt$hash`) is the hash of `password`.
pub fn verify(password: &str, encoded: &str) -> bool {
    let mut parts = encoded.split('$');
    let (Some(""), Some("7"), Some(iter), Some(salt), Some(hash), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return false;
    };
    let (Ok(iter), Ok(salt), Ok(hash)) = (
        iter.parse::<u32>(),
        STANDARD.decode(salt),
        STANDARD.decode(hash),
    ) else {
        return false;
    };
    if iter == 0 || iter > 1_000_000 {
        return false;
    }
    let computed = pbkdf2_sha512(password.as_bytes(), &salt, iter);
    // Constant time: compare every byte.
    hash.len() == HASH_LEN
        && computed
            .iter()
            .zip(hash.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written by `mosquitto_passwd -c -b pwt alice secret` (Mosquitto 2.0.11).
    const MOSQUITTO_WROTE: &str = "$7$101$D2CECliNuReXTVqq$CizQNXGCXvqpHZID6anfNBxh5YO9bSZ11HpFcwC113AWZSxSj2oyG08+ksDtqoDoAt9SsiA81YU85F92LT9ocg==";

    #[test]
    fn hash_matches_what_mosquitto_passwd_wrote() {
        let salt = STANDARD.decode("D2CECliNuReXTVqq").unwrap();
        assert_eq!(hash_with_salt("secret", &salt), MOSQUITTO_WROTE);
        assert!(verify("secret", MOSQUITTO_WROTE));
        assert!(!verify("Secret", MOSQUITTO_WROTE));
    }

    #[test]
    fn fresh_hashes_differ_by_salt_and_verify() {
        let a = hash("pw");
        let b = hash("pw");
        assert_ne!(a, b);
        assert!(verify("pw", &a) && verify("pw", &b));
    }

    #[test]
    fn garbage_never_verifies_or_panics() {
        for junk in [
            "",
            "$7$",
            "$7$0$AA==$AA==",
            "$6$101$x$y",
            "$7$101$!!$??",
            "$7$99999999$AA$AA",
        ] {
            assert!(!verify("pw", junk), "{junk}");
        }
    }
}
