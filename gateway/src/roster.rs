//! The community roster (residents) and its replacement while the gateway runs.
//!
//! The roster comes from the community's resident information system as a CSV export
//! (`residents_csv`). It changes: people move in, move away, get a new card or a new status.
//! An import is checked here (every row, every reference; all problems at once, with line
//! numbers), applied by the journal writer in one transaction (cards bound and retired, one
//! `roster_imported` event), and only then swapped into the running gateway and saved over
//! `residents_csv` so a restart loads the same roster.
//!
//! **Invariants:** a [`Roster`] never holds a resident whose row failed a check; every device's
//! resident is in it; one card belongs to at most one resident. Names never leave this module in
//! logs or summaries: summaries carry resident ids only.

use crate::config::{DeviceConfig, Problem, Resident, StaffConfig};
use arc_swap::ArcSwap;
use eldergate_protocol::topic::is_valid_id;
use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Residents by id.
pub type Residents = BTreeMap<String, Resident>;

/// The live roster, shared by every part of the gateway that reads residents. Cloning shares the
/// same cell: a replacement is seen by all clones at once.
#[derive(Clone, Default)]
pub struct Roster(Arc<ArcSwap<Residents>>);

impl fmt::Debug for Roster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Roster({} residents)", self.0.load().len())
    }
}

impl Roster {
    /// A roster holding `residents`.
    pub fn new(residents: Residents) -> Roster {
        Roster(Arc::new(ArcSwap::from_pointee(residents)))
    }

    /// The roster as it is now (a snapshot; a later import does not change it).
    pub fn current(&self) -> Arc<Residents> {
        self.0.load_full()
    }

    /// One resident, as the roster has them now.
    pub fn get(&self, id: &str) -> Option<Resident> {
        self.0.load().get(id).cloned()
    }

    /// True when the resident is on the roster now.
    pub fn contains(&self, id: &str) -> bool {
        self.0.load().contains_key(id)
    }

    /// Replaces the roster. Only the journal writer calls this, after the import committed.
    pub(crate) fn replace(&self, residents: Arc<Residents>) {
        self.0.store(residents);
    }
}

/// A card UID as stored: hex digits, upper case, no separators.
pub fn card_key(card: &str) -> String {
    card.chars()
        .filter(|c| c.is_ascii_hexdigit())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

fn problem(path: String, message: String) -> Problem {
    Problem { path, message }
}

/// Reads a roster CSV (header row first; columns as in `shared/data/community-roster.csv`,
/// unknown columns ignored). Returns the residents whose rows passed every check and one
/// problem per bad row (`name:line`). The caller decides whether any problem rejects the whole
/// roster (an import does; nothing half-imported).
pub fn parse(csv_bytes: &[u8], name: &str) -> (Residents, Vec<Problem>) {
    let mut problems = Vec::new();
    let mut residents = Residents::new();
    let mut cards: BTreeMap<String, String> = BTreeMap::new();
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(csv_bytes);
    let headers = match reader.headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            problems.push(problem(name.into(), format!("no header row: {e}")));
            return (residents, problems);
        }
    };
    if !headers.iter().any(|h| h == "resident_id") || !headers.iter().any(|h| h == "name") {
        problems.push(problem(
            format!("{name}:1"),
            "the header row needs at least resident_id and name (columns: resident_id,name,gender,birth_date,statuses,building,unit,room,grid,phone,card_id,emergency_contact)".into(),
        ));
        return (residents, problems);
    }
    for record in reader.records() {
        let row = record.and_then(|r| {
            let line = r.position().map(|p| p.line()).unwrap_or(0);
            r.deserialize::<Resident>(Some(&headers))
                .map(|res| (line, res))
        });
        let (line, mut r) = match row {
            Ok(row) => row,
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                let hint = if matches!(e.kind(), csv::ErrorKind::Utf8 { .. }) {
                    "; the file is not UTF-8: in Excel, save as \"CSV UTF-8\""
                } else {
                    ""
                };
                problems.push(problem(format!("{name}:{line}"), format!("{e}{hint}")));
                continue;
            }
        };
        let at = format!("{name}:{line}");
        let before = problems.len();
        if !is_valid_id(&r.resident_id) {
            problems.push(problem(
                at.clone(),
                format!(
                    "resident_id {:?} must be 1-64 characters of A-Z a-z 0-9 - _ .",
                    r.resident_id
                ),
            ));
        } else if residents.contains_key(&r.resident_id) {
            problems.push(problem(
                at.clone(),
                format!("duplicate resident id {}", r.resident_id),
            ));
        }
        if r.name.trim().is_empty() {
            problems.push(problem(at.clone(), "the name is empty".into()));
        }
        if let Some(d) = r.birth_date.as_deref().filter(|d| !d.is_empty()) {
            if d.parse::<jiff::civil::Date>().is_err() {
                problems.push(problem(
                    at.clone(),
                    format!("birth_date {d:?} is not a date (YYYY-MM-DD)"),
                ));
            }
        }
        r.card_id = r.card_id.filter(|c| !c.trim().is_empty());
        if let Some(card) = r.card_id.as_deref() {
            let key = card_key(card);
            if key.len() < 8 || key.len() > 20 || key.len() != card.trim().len() {
                problems.push(problem(
                    at.clone(),
                    format!("card_id {card:?} is not a card UID (8-20 hex digits)"),
                ));
            } else if let Some(other) = cards.get(&key) {
                problems.push(problem(
                    at.clone(),
                    format!("card {key} is also the card of {other}; one card, one resident"),
                ));
            } else {
                cards.insert(key, r.resident_id.clone());
            }
        }
        if problems.len() == before {
            residents.insert(r.resident_id.clone(), r);
        }
    }
    (residents, problems)
}

/// Reads and checks a roster file (see [`parse`]).
pub fn read(path: &Path) -> (Residents, Vec<Problem>) {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "residents_csv".into());
    match std::fs::read(path) {
        Ok(bytes) => parse(&bytes, &name),
        Err(e) => (
            Residents::new(),
            vec![problem(
                "residents_csv".into(),
                format!("cannot read {}: {e}", path.display()),
            )],
        ),
    }
}

/// References between the roster and the rest of the config: every device's resident is on the
/// roster; every resident's grid has a grid worker (when staff are configured).
pub fn check_references(
    residents: &Residents,
    devices: &BTreeMap<String, DeviceConfig>,
    staff: &BTreeMap<String, StaffConfig>,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    for d in devices.values() {
        if let Some(r) = &d.resident_id {
            if !residents.contains_key(r) {
                problems.push(problem(
                    format!("devices.{}.resident_id", d.id),
                    format!("resident {r} is not on the roster; keep them on it, or reassign or remove device {} in the config first", d.id),
                ));
            }
        }
    }
    for r in residents.values() {
        if let Some(g) = r.grid.as_deref().filter(|g| !g.is_empty()) {
            let has_worker = staff
                .values()
                .any(|s| s.role == "grid_worker" && s.grid.as_deref() == Some(g));
            if !has_worker && !staff.is_empty() {
                problems.push(problem(
                    format!("residents.{}.grid", r.resident_id),
                    format!("grid {g} has no grid_worker in staff; alerts for this resident would skip the grid worker"),
                ));
            }
        }
    }
    problems
}

/// What an import changes, by resident id.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RosterDiff {
    /// On the new roster only.
    pub added: Vec<String>,
    /// On the old roster only (moved away, deceased): their cards are retired.
    pub removed: Vec<String>,
    /// On both, with any field changed.
    pub changed: Vec<String>,
    /// Residents whose roster card changed: (resident, old card, new card).
    pub card_changes: Vec<(String, Option<String>, Option<String>)>,
}

/// Compares two rosters.
pub fn diff(old: &Residents, new: &Residents) -> RosterDiff {
    let mut d = RosterDiff::default();
    for (id, n) in new {
        match old.get(id) {
            None => d.added.push(id.clone()),
            Some(o) => {
                if o != n {
                    d.changed.push(id.clone());
                }
                let (oc, nc) = (
                    o.card_id.as_deref().map(card_key),
                    n.card_id.as_deref().map(card_key),
                );
                if oc != nc {
                    d.card_changes.push((id.clone(), oc, nc));
                }
            }
        }
    }
    d.removed = old
        .keys()
        .filter(|id| !new.contains_key(*id))
        .cloned()
        .collect();
    d
}

/// A roster file written and fsynced beside its destination, not yet in place.
#[derive(Debug)]
pub struct StagedFile {
    tmp: PathBuf,
    dest: PathBuf,
}

impl StagedFile {
    /// Writes `bytes` to a temporary file next to `dest` and fsyncs it.
    pub fn write(dest: &Path, bytes: &[u8]) -> std::io::Result<StagedFile> {
        let mut tmp = dest.as_os_str().to_owned();
        tmp.push(".importing");
        let tmp = PathBuf::from(tmp);
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        Ok(StagedFile {
            tmp,
            dest: dest.to_path_buf(),
        })
    }

    /// Renames the file over its destination and fsyncs the directory, so the next start reads
    /// it even after a power cut.
    pub fn install(self) -> std::io::Result<()> {
        std::fs::rename(&self.tmp, &self.dest)?;
        if let Some(dir) = self.dest.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Removes the temporary file (the import did not commit).
    pub fn discard(self) {
        let _ = std::fs::remove_file(&self.tmp);
    }
}

mod import;
pub use import::{ImportRoster, RosterImported};

#[cfg(test)]
mod tests;
