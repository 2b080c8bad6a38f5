//! The dedupe window: which gateway event a (device, device sequence) pair was last used by,
//! for the events of the last `journal.dedupe_window_s`, so that a retransmission is answered
//! with its original seq and not applied again (ADR 0020).
//!
//! Why it looks like this: with the default 24 h window a community's buttons leave millions of
//! keys, and reading all of them before the writer served made a start with a large journal take
//! seconds. So:
//! - **keys are compact**: device ids and fingerprints are interned once; a key is one `u64`
//!   (device number, device sequence) and an entry 16 bytes (seq, fingerprint number, the second
//!   it was first seen) — 24 bytes in the map, 8 in the expiry queue, plus the map's slack;
//! - **the writer does not wait for them**: at start (and after a failed COMMIT) the keys of
//!   the events already committed (seq ≤ `upto_seq`) are read by a loader task on a read-only
//!   rusqlite connection on a blocking thread (journal/bulk.rs; 1M keys in ~1 s, with a count
//!   first that sizes the map once; sqlx's row-by-row hand-off took 9.2 s) while the writer
//!   serves. Until the writer adopts what the loader read, a key that is not in memory is
//!   looked up in the journal (`events_device` index), with exactly the bounds the loader uses.
//!   The keys remembered meanwhile are laid over the loaded ones.
//!
//! Invariants: a lookup answers what a window read completely at start would answer — the last
//! event of that key among those committed before the start and received within one window
//! before it, unless a later one was remembered since; keys read at start expire one window after
//! start (conservative: the window is never shorter); keys remembered later expire one window after
//! they were first remembered (rounded up to the second). An operation's keys are undone exactly
//! with its savepoint.

use super::bulk::BulkReader;
use super::JournalError;
use sqlx::sqlite::SqliteConnection;
use sqlx::Row;
use std::collections::VecDeque;
use std::sync::Arc;

/// The window's maps hash with foldhash (seeded per process): every alarm-lane event looks its
/// key up and remembers it, and SipHash, std's default, was most of that cost (2.8 % of the
/// gateway's CPU under ingest load). The keys are registered device ids and a device's u32
/// sequence numbers, so flooding one bucket would take a registered device and this process's
/// seed.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// What was seen recently of a device sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentKey {
    /// The gateway seq of the event that used it.
    pub seq: i64,
    /// What it carried (the event kind), to tell a retransmission from a reused number.
    pub fingerprint: Arc<str>,
}

/// One remembered key: 16 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    seq: i64,
    fingerprint: u32,
    /// Seconds since the writer's clock base ([`Keys::at`]) when the key was first remembered.
    at: u32,
}

/// Strings (device ids, fingerprints) stored once, named by a number.
#[derive(Default)]
struct Names {
    ids: HashMap<Arc<str>, u32>,
    names: Vec<Arc<str>>,
}

impl Names {
    fn id(&self, s: &str) -> Option<u32> {
        self.ids.get(s).copied()
    }

    /// `None` only past 2³² distinct strings (device ids are registered, kinds are ours).
    fn intern(&mut self, s: &str) -> Option<u32> {
        if let Some(id) = self.ids.get(s) {
            return Some(*id);
        }
        let id = u32::try_from(self.names.len()).ok()?;
        let name: Arc<str> = Arc::from(s);
        self.names.push(name.clone());
        self.ids.insert(name, id);
        Some(id)
    }

    fn name(&self, id: u32) -> Option<&Arc<str>> {
        self.names.get(usize::try_from(id).ok()?)
    }
}

/// The keys of the window, with their expiry order.
#[derive(Default)]
pub(crate) struct Keys {
    names: Names,
    map: HashMap<u64, Entry>,
    /// Keys in the order they were first remembered (their `at` never decreases along it).
    order: VecDeque<u64>,
}

fn pack(device: u32, device_seq: u32) -> u64 {
    (u64::from(device) << 32) | u64::from(device_seq)
}

/// What [`Keys::remember`] replaced, to undo it.
pub(crate) type Undo = (u64, Option<Entry>);

impl Keys {
    /// No keys yet, with room for `n` without growing.
    pub(crate) fn with_capacity(n: usize) -> Keys {
        Keys {
            names: Names::default(),
            map: HashMap::with_capacity_and_hasher(n, Default::default()),
            order: VecDeque::with_capacity(n),
        }
    }

    /// How many keys are held.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn get(&self, device: &str, device_seq: u32) -> Option<RecentKey> {
        let key = pack(self.names.id(device)?, device_seq);
        let e = self.map.get(&key)?;
        Some(RecentKey {
            seq: e.seq,
            fingerprint: self.names.name(e.fingerprint)?.clone(),
        })
    }

    /// Remembers (device, device seq) → (seq, fingerprint), first seen at `at`. A key already
    /// held keeps the time it was first seen (and so its place in the expiry order). Returns what
    /// to give [`Keys::undo`]; `None` if the names cannot be numbered (2³² of them).
    pub(crate) fn remember(
        &mut self,
        device: &str,
        device_seq: u32,
        seq: i64,
        fingerprint: &str,
        at: u32,
    ) -> Option<Undo> {
        let key = pack(self.names.intern(device)?, device_seq);
        let fingerprint = self.names.intern(fingerprint)?;
        let mut entry = Entry {
            seq,
            fingerprint,
            at,
        };
        let prev = self.map.get(&key).copied();
        match prev {
            Some(p) => entry.at = p.at,
            None => self.order.push_back(key),
        }
        self.map.insert(key, entry);
        Some((key, prev))
    }

    /// Undoes one [`Keys::remember`]; undo in the reverse order of remembering.
    pub(crate) fn undo(&mut self, (key, prev): Undo) {
        match prev {
            Some(p) => {
                self.map.insert(key, p);
            }
            None => {
                self.map.remove(&key);
                if self.order.back() == Some(&key) {
                    self.order.pop_back();
                }
            }
        }
    }

    /// Forgets the keys first seen more than `window_s` seconds before `now`.
    pub(crate) fn prune(&mut self, now: u32, window_s: u32) {
        while let Some(key) = self.order.front() {
            match self.map.get(key) {
                Some(e) if now.saturating_sub(e.at) <= window_s => break,
                Some(_) => {
                    self.map.remove(key);
                }
                // Undone out of order (not by this module's callers): nothing to forget.
                None => {}
            }
            self.order.pop_front();
        }
    }

    /// Lays `newer` (the keys remembered while these were read) over these keys, in its order.
    pub(crate) fn overlay(&mut self, newer: &Keys) {
        for key in &newer.order {
            let Some(e) = newer.map.get(key) else {
                continue;
            };
            let (Some(device), Some(fingerprint)) = (
                newer.names.name((key >> 32) as u32),
                newer.names.name(e.fingerprint),
            ) else {
                continue;
            };
            // The names fit: these keys were numbered by `newer` already.
            let _ = self.remember(device, *key as u32, e.seq, fingerprint, e.at);
        }
    }

    /// Reads the keys of the events with seq ≤ `upto_seq` received at or after `since` (RFC 3339,
    /// as stored), all first seen at `at`.
    pub(crate) async fn read(
        bulk: &BulkReader,
        upto_seq: i64,
        since: &str,
        at: u32,
    ) -> Result<Keys, JournalError> {
        let since = since.to_owned();
        bulk.read(move |conn| {
            // Sized once: grown while reading, the map doubled with both tables alive (at
            // 1,000,000 keys the gateway's peak was 135 MiB, 103 MiB sized once). The count
            // reads the same rows once more, on this blocking thread, while the writer serves.
            // One text for both, so the count cannot drift from the rows read.
            macro_rules! window_rows {
                () => {
                    " FROM events
                     WHERE seq <= ?1 AND device_seq IS NOT NULL AND received_at >= ?2"
                };
            }
            let rows: i64 = conn.query_row(
                concat!("SELECT count(*)", window_rows!()),
                rusqlite::params![upto_seq, since],
                |r| r.get(0),
            )?;
            let mut keys = Keys::with_capacity(usize::try_from(rows).unwrap_or(0));
            let mut stmt = conn.prepare(concat!(
                "SELECT device_id, device_seq, seq, kind",
                window_rows!(),
                " ORDER BY seq"
            ))?;
            let mut rows = stmt.query(rusqlite::params![upto_seq, since])?;
            while let Some(row) = rows.next()? {
                let device = text(row, 0)?;
                let Ok(dseq) = u32::try_from(row.get::<_, i64>(1)?) else {
                    continue;
                };
                let kind = text(row, 3)?;
                let _ = keys.remember(device, dseq, row.get(2)?, kind, at);
            }
            Ok(keys)
        })
        .await
    }

    /// The same lookup as [`Keys::read`] for one key, on the writer's connection.
    pub(crate) async fn look_up(
        conn: &mut SqliteConnection,
        device: &str,
        device_seq: u32,
        upto_seq: i64,
        since: &str,
    ) -> Result<Option<RecentKey>, JournalError> {
        let row = sqlx::query(
            "SELECT seq, kind FROM events
             WHERE device_id = ? AND device_seq = ? AND seq <= ? AND received_at >= ?
             ORDER BY seq DESC LIMIT 1",
        )
        .bind(device)
        .bind(i64::from(device_seq))
        .bind(upto_seq)
        .bind(since)
        .fetch_optional(conn)
        .await?;
        match row {
            None => Ok(None),
            Some(r) => Ok(Some(RecentKey {
                seq: r.try_get(0)?,
                fingerprint: Arc::from(r.try_get::<&str, _>(1)?),
            })),
        }
    }
}

/// Column `i` of `row` as borrowed text (NULL or another type is an error).
fn text<'r>(row: &'r rusqlite::Row<'_>, i: usize) -> rusqlite::Result<&'r str> {
    row.get_ref(i)?.as_str().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(k: &Keys, device: &str, s: u32) -> Option<(i64, String)> {
        k.get(device, s).map(|r| (r.seq, r.fingerprint.to_string()))
    }

    #[test]
    fn a_remembered_key_is_found_and_another_device_or_seq_is_not() {
        let mut k = Keys::default();
        k.remember("btn-1", 5, 10, "checkin", 0);
        assert_eq!(fp(&k, "btn-1", 5), Some((10, "checkin".into())));
        assert_eq!(fp(&k, "btn-1", 6), None);
        assert_eq!(fp(&k, "btn-2", 5), None);
        assert_eq!(fp(&k, "checkin", 5), None, "names of kinds are not devices");
    }

    #[test]
    fn a_window_sized_for_its_keys_does_not_grow_while_they_are_remembered() {
        let mut k = Keys::with_capacity(10_000);
        let (map, order) = (k.map.capacity(), k.order.capacity());
        for s in 0..10_000 {
            k.remember("btn-1", s, i64::from(s), "checkin", 0);
        }
        assert_eq!(k.len(), 10_000);
        assert_eq!(k.map.capacity(), map, "the map was not reallocated");
        assert_eq!(k.order.capacity(), order, "nor the expiry queue");
    }

    #[test]
    fn an_undone_key_is_forgotten_and_a_replaced_one_restored() {
        let mut k = Keys::default();
        k.remember("btn-1", 5, 10, "checkin", 0);
        let u1 = k.remember("btn-1", 5, 11, "alarm_press", 3).expect("named");
        let u2 = k.remember("btn-1", 6, 12, "checkin", 3).expect("named");
        k.undo(u2);
        k.undo(u1);
        assert_eq!(fp(&k, "btn-1", 5), Some((10, "checkin".into())));
        assert_eq!(fp(&k, "btn-1", 6), None);
        assert_eq!(k.order.len(), 1, "the undone key left the expiry order too");
    }

    #[test]
    fn keys_expire_a_whole_window_after_they_were_first_seen() {
        let mut k = Keys::default();
        k.remember("btn-1", 1, 1, "checkin", 0);
        k.remember("btn-1", 2, 2, "checkin", 5);
        // A reused number keeps its first time.
        k.remember("btn-1", 1, 3, "alarm_press", 8);
        k.prune(10, 10);
        assert_eq!(k.len(), 2, "exactly one window old: kept");
        k.prune(11, 10);
        assert_eq!(fp(&k, "btn-1", 1), None);
        assert_eq!(fp(&k, "btn-1", 2), Some((2, "checkin".into())));
        k.prune(16, 10);
        assert_eq!(k.len(), 0);
        assert!(k.order.is_empty());
    }

    #[test]
    fn keys_remembered_while_the_window_was_read_win_over_the_read_ones() {
        let mut read = Keys::default();
        read.remember("btn-1", 1, 1, "checkin", 0);
        read.remember("btn-2", 1, 2, "checkin", 0);
        let mut newer = Keys::default();
        newer.remember("btn-9", 7, 50, "alarm_press", 2);
        newer.remember("btn-1", 1, 51, "alarm_press", 3);
        read.overlay(&newer);
        assert_eq!(fp(&read, "btn-1", 1), Some((51, "alarm_press".into())));
        assert_eq!(fp(&read, "btn-2", 1), Some((2, "checkin".into())));
        assert_eq!(fp(&read, "btn-9", 7), Some((50, "alarm_press".into())));
        // The read key keeps its (start) time; the new one expires after its own window.
        read.prune(11, 10);
        assert_eq!(fp(&read, "btn-9", 7), Some((50, "alarm_press".into())));
        assert_eq!(fp(&read, "btn-1", 1), None);
    }
}
