//! Login throttling: at most [`PER_ACCOUNT`] failed logins per staff id and [`PER_ADDRESS`] per
//! client address within [`WINDOW`]; beyond that a login is answered 429 without checking the
//! password (so a guesser cannot even burn CPU on argon2). Memory is bounded: at most
//! [`MAX_KEYS`] keys are tracked, the stalest dropped first.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed logins per staff id within the window.
pub const PER_ACCOUNT: usize = 5;
/// Failed logins per address within the window.
pub const PER_ADDRESS: usize = 20;
/// The window.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Keys tracked at most (per kind).
pub const MAX_KEYS: usize = 10_000;

struct Failures<K> {
    by_key: HashMap<K, VecDeque<Instant>>,
}

impl<K> Default for Failures<K> {
    fn default() -> Self {
        Failures {
            by_key: HashMap::new(),
        }
    }
}

impl<K: std::hash::Hash + Eq + Clone> Failures<K> {
    fn recent(&mut self, k: &K, now: Instant) -> usize {
        match self.by_key.get_mut(k) {
            Some(q) => {
                while q.front().is_some_and(|t| now.duration_since(*t) > WINDOW) {
                    q.pop_front();
                }
                q.len()
            }
            None => 0,
        }
    }

    fn add(&mut self, k: K, now: Instant, cap: usize) {
        if self.by_key.len() >= MAX_KEYS && !self.by_key.contains_key(&k) {
            let stalest = self
                .by_key
                .iter()
                .min_by_key(|(_, q)| q.back().copied())
                .map(|(k, _)| k.clone());
            if let Some(s) = stalest {
                self.by_key.remove(&s);
            }
        }
        let q = self.by_key.entry(k).or_default();
        q.push_back(now);
        while q.len() > cap {
            q.pop_front();
        }
    }
}

/// The throttle's state.
#[derive(Default)]
pub struct Throttle {
    accounts: Mutex<Failures<String>>,
    addresses: Mutex<Failures<IpAddr>>,
}

/// Why a login attempt is not even checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocked {
    /// Too many failures for this staff id.
    Account,
    /// Too many failures from this address.
    Address,
}

impl Throttle {
    /// Whether a login for `staff` from `addr` may be checked now.
    pub fn check(&self, staff: &str, addr: IpAddr) -> Result<(), Blocked> {
        let now = Instant::now();
        if let Ok(mut a) = self.addresses.lock() {
            if a.recent(&addr, now) >= PER_ADDRESS {
                return Err(Blocked::Address);
            }
        }
        if let Ok(mut a) = self.accounts.lock() {
            if a.recent(&staff.to_string(), now) >= PER_ACCOUNT {
                return Err(Blocked::Account);
            }
        }
        Ok(())
    }

    /// Records a failed login.
    pub fn failed(&self, staff: &str, addr: IpAddr) {
        let now = Instant::now();
        if let Ok(mut a) = self.addresses.lock() {
            a.add(addr, now, PER_ADDRESS);
        }
        if let Ok(mut a) = self.accounts.lock() {
            // Bounded: a staff id is at most 64 characters here.
            let key: String = staff.chars().take(64).collect();
            a.add(key, now, PER_ACCOUNT);
        }
    }

    /// A successful login clears the account's failures (not the address's).
    pub fn succeeded(&self, staff: &str) {
        if let Ok(mut a) = self.accounts.lock() {
            a.by_key.remove(staff);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_is_blocked_after_five_failures_from_anywhere() {
        let t = Throttle::default();
        for i in 0..PER_ACCOUNT {
            assert_eq!(t.check("S001", IpAddr::from([10, 0, 0, i as u8])), Ok(()));
            t.failed("S001", IpAddr::from([10, 0, 0, i as u8]));
        }
        assert_eq!(
            t.check("S001", IpAddr::from([10, 0, 0, 99])),
            Err(Blocked::Account)
        );
        assert_eq!(t.check("S002", IpAddr::from([10, 0, 0, 99])), Ok(()));
    }

    #[test]
    fn an_address_is_blocked_after_twenty_failures_on_any_accounts() {
        let t = Throttle::default();
        let addr = IpAddr::from([192, 168, 1, 7]);
        for i in 0..PER_ADDRESS {
            t.failed(&format!("S{i:03}"), addr);
        }
        assert_eq!(t.check("S999", addr), Err(Blocked::Address));
    }

    #[test]
    fn tracked_keys_stay_bounded() {
        let t = Throttle::default();
        for i in 0..(MAX_KEYS + 50) {
            t.failed(&format!("x{i}"), IpAddr::from([127, 0, 0, 1]));
        }
        assert!(t.accounts.lock().map(|a| a.by_key.len()).unwrap_or(0) <= MAX_KEYS);
    }
}
