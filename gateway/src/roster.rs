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

use crate::community::{Device as DeviceConfig, Resident, StaffMember as StaffConfig};
use crate::problem::Problem;
use eldergate_protocol::topic::is_valid_id;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

pub use crate::community::{Residents, Roster};

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

/// Problems kept with their text; more are only counted, so that a file of garbage costs a
/// counter, not a copy of itself (30 MB of bad rows once made 2.7 million problems and 5 GB).
pub const MAX_LISTED_PROBLEMS: usize = 100;

/// Longest row accepted, bytes: a resident's row is a few hundred bytes; a longer one is not a
/// roster row (and is not quoted back in full).
pub const MAX_ROW_BYTES: usize = 4096;

/// Longest value quoted back in a problem, characters.
const MAX_QUOTED_CHARS: usize = 40;

/// The problems of a roster: the first [`MAX_LISTED_PROBLEMS`] with their text, all of them
/// counted. Memory stays bounded however bad the input is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Problems {
    listed: Vec<Problem>,
    total: usize,
}

impl Problems {
    /// Records a problem (kept while fewer than [`MAX_LISTED_PROBLEMS`] are listed).
    pub fn push(&mut self, p: Problem) {
        self.total = self.total.saturating_add(1);
        if self.listed.len() < MAX_LISTED_PROBLEMS {
            self.listed.push(p);
        }
    }

    /// True when nothing is wrong.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// How many problems were found (listed or not).
    pub fn total(&self) -> usize {
        self.total
    }

    /// The first problems found, with their text.
    pub fn listed(&self) -> &[Problem] {
        &self.listed
    }

    /// The listed problems, plus one that says how many more were found, if any.
    pub fn into_vec(self) -> Vec<Problem> {
        let more = self.total.saturating_sub(self.listed.len());
        let mut v = self.listed;
        if more > 0 {
            v.push(problem(
                "roster".into(),
                format!("… and {more} more problem(s) not listed; fix the ones above first"),
            ));
        }
        v
    }
}

/// `value` in quotes for a problem message, cut to [`MAX_QUOTED_CHARS`] characters.
fn quoted(value: &str) -> String {
    match value.char_indices().nth(MAX_QUOTED_CHARS) {
        None => format!("{value:?}"),
        Some((end, _)) => format!("{:?}… ({} bytes)", &value[..end], value.len()),
    }
}

/// Reads a roster CSV (header row first; columns as in `shared/data/community-roster.csv`,
/// unknown columns ignored). Returns the residents whose rows passed every check and the
/// problems of the bad rows (`name:line`). The caller decides whether any problem rejects the
/// whole roster (an import does; nothing half-imported).
///
/// Memory: the residents (at most the input's size, several times over) and at most
/// [`MAX_LISTED_PROBLEMS`] problems, each quoting at most [`MAX_QUOTED_CHARS`] of a value.
pub fn parse(csv_bytes: &[u8], name: &str) -> (Residents, Problems) {
    let mut problems = Problems::default();
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
    // One record buffer for the whole file, not one allocation per row.
    let mut record = csv::StringRecord::new();
    loop {
        let row = match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                let line = record.position().map(|p| p.line()).unwrap_or(0);
                if record.as_slice().len() > MAX_ROW_BYTES {
                    problems.push(problem(
                        format!("{name}:{line}"),
                        format!(
                            "the row is {} bytes; a resident's row is at most {MAX_ROW_BYTES} (is this the roster export?)",
                            record.as_slice().len()
                        ),
                    ));
                    continue;
                }
                record
                    .deserialize::<Resident>(Some(&headers))
                    .map(|res| (line, res))
            }
            Err(e) => Err(e),
        };
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
        let before = problems.total();
        if !is_valid_id(&r.resident_id) {
            problems.push(problem(
                at.clone(),
                format!(
                    "resident_id {} must be 1-64 characters of A-Z a-z 0-9 - _ .",
                    quoted(&r.resident_id)
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
                    format!("birth_date {} is not a date (YYYY-MM-DD)", quoted(d)),
                ));
            }
        }
        r.card_id = r.card_id.filter(|c| !c.trim().is_empty());
        if let Some(card) = r.card_id.as_deref() {
            let key = card_key(card);
            if key.len() < 8 || key.len() > 20 || key.len() != card.trim().len() {
                problems.push(problem(
                    at.clone(),
                    format!(
                        "card_id {} is not a card UID (8-20 hex digits)",
                        quoted(card)
                    ),
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
        if problems.total() == before {
            residents.insert(r.resident_id.clone(), r);
        }
    }
    (residents, problems)
}

/// Reads and checks a roster file (see [`parse`]); the problems as in [`Problems::into_vec`].
pub fn read(path: &Path) -> (Residents, Vec<Problem>) {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "residents_csv".into());
    match std::fs::read(path) {
        Ok(bytes) => {
            let (residents, problems) = parse(&bytes, &name);
            (residents, problems.into_vec())
        }
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
/// roster; every resident's grid has a grid worker (when staff are configured). Added to
/// `problems` (bounded like every roster problem).
pub fn check_references_into(
    residents: &Residents,
    devices: &BTreeMap<String, DeviceConfig>,
    staff: &BTreeMap<String, StaffConfig>,
    problems: &mut Problems,
) {
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
}

/// [`check_references_into`] as a list (see [`Problems::into_vec`]).
pub fn check_references(
    residents: &Residents,
    devices: &BTreeMap<String, DeviceConfig>,
    staff: &BTreeMap<String, StaffConfig>,
) -> Vec<Problem> {
    let mut problems = Problems::default();
    check_references_into(residents, devices, staff, &mut problems);
    problems.into_vec()
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
