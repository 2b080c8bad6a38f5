//! The simulator's "flash": a [`SeqStore`] in a directory on the host, one small file per
//! device (`<dir>/<device>.seq`, the high-water mark as decimal text), so `eldergate-sim sim
//! --seq-dir DIR` keeps its devices' sequence numbers across its own restarts the way a device
//! with storage does (protocol/SPEC.md §5; the firmware's own `SeqAllocator` decides when to
//! store).
//!
//! Guarantees:
//! - **A store is atomic and durable**: the mark is written to a temporary file, fsynced,
//!   renamed over the old file and the directory is fsynced, so after a crash the file holds the
//!   old mark or the new one, never a torn one.
//! - **Nothing here panics**: a failed write is the store's error (the firmware reports it and
//!   retries, see `AlarmButton::poll_persisted`); a file that exists but cannot be read or does
//!   not hold a mark is an error at load, never taken for "nothing stored" — only a missing file
//!   is (starting over from a random number would be right for a fresh device, but silently wrong
//!   for one whose mark was lost).
//! - **A device id names one file in the directory**: ids that could name another path (`/`,
//!   `..`, a leading dot) are refused.

use eldergate_firmware::seq::SeqStore;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Why a device's sequence-number file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SeqFileError {
    /// The device id cannot name a file of its own.
    #[error(
        "device id {0:?} cannot name a sequence-number file (use letters, digits, '-', '_' and \
         '.', not first); rename the device or run the simulator without --seq-dir"
    )]
    UnsafeDeviceId(String),
    /// The directory could not be created.
    #[error("cannot create the sequence-number directory {path}: {source}; check --seq-dir")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The file exists but could not be read.
    #[error("cannot read the sequence-number file {path}: {source}; fix its permissions")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The file does not hold a mark.
    #[error(
        "the sequence-number file {path} is corrupt (holds {content:?}, not a decimal number); \
         delete it only if the gateway has not heard this device for 24 h, else its next \
         events may be taken for duplicates"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What it holds (at most 32 characters of it).
        content: String,
    },
    /// The mark could not be stored.
    #[error("cannot store the sequence-number mark in {path}: {source}; check the disk and the directory's permissions")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

/// One device's high-water mark in `<dir>/<device>.seq`.
#[derive(Debug, Clone)]
pub struct FileSeqStore {
    dir: PathBuf,
    path: PathBuf,
    tmp: PathBuf,
}

impl FileSeqStore {
    /// The store of `device` in `dir` (nothing is touched until load or store).
    pub fn new(dir: &Path, device: &str) -> Result<Self, SeqFileError> {
        let safe = !device.is_empty()
            && !device.starts_with('.')
            && device
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !safe {
            return Err(SeqFileError::UnsafeDeviceId(device.to_string()));
        }
        Ok(FileSeqStore {
            dir: dir.to_path_buf(),
            path: dir.join(format!("{device}.seq")),
            tmp: dir.join(format!(".{device}.seq.tmp")),
        })
    }

    /// The file the mark is kept in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write_atomically(&self, mark: u32) -> io::Result<()> {
        let mut f = File::create(&self.tmp)?;
        f.write_all(format!("{mark}\n").as_bytes())?;
        f.sync_all()?;
        drop(f);
        fs::rename(&self.tmp, &self.path)?;
        // The rename is durable only once the directory entry is.
        File::open(&self.dir)?.sync_all()
    }
}

/// Creates the directory the stores live in (and its parents).
pub fn create_seq_dir(dir: &Path) -> Result<(), SeqFileError> {
    fs::create_dir_all(dir).map_err(|source| SeqFileError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })
}

impl SeqStore for FileSeqStore {
    type Error = SeqFileError;

    fn load(&mut self) -> Result<Option<u32>, SeqFileError> {
        let text = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(SeqFileError::Read {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        let text = String::from_utf8_lossy(&text);
        text.trim()
            .parse::<u32>()
            .map(Some)
            .map_err(|_| SeqFileError::Corrupt {
                path: self.path.clone(),
                content: text.chars().take(32).collect(),
            })
    }

    fn store(&mut self, mark: u32) -> Result<(), SeqFileError> {
        self.write_atomically(mark).map_err(|source| {
            // Leave no temporary file behind; the old mark (if any) is untouched.
            let _ = fs::remove_file(&self.tmp);
            SeqFileError::Write {
                path: self.path.clone(),
                source,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eldergate_firmware::seq::{SeqAllocator, DEFAULT_SEQ_BLOCK};

    #[test]
    fn a_stored_mark_is_loaded_back_by_a_new_store() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = FileSeqStore::new(dir.path(), "btn-0001").unwrap();
        store.store(4_000_000_000).unwrap();
        store.store(77).unwrap();
        let mut again = FileSeqStore::new(dir.path(), "btn-0001").unwrap();
        assert_eq!(again.load().unwrap(), Some(77));
        assert_eq!(
            fs::read_to_string(dir.path().join("btn-0001.seq")).unwrap(),
            "77\n"
        );
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["btn-0001.seq"], "no temporary file is left");
    }

    #[test]
    fn a_missing_file_means_nothing_was_stored() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = FileSeqStore::new(dir.path(), "rdr-01").unwrap();
        assert_eq!(store.load().unwrap(), None);
    }

    #[test]
    fn a_corrupt_file_is_an_error_not_a_fresh_start() {
        let dir = tempfile::tempdir().unwrap();
        for content in ["", "12ab\n", "-5", "99999999999"] {
            fs::write(dir.path().join("btn-0001.seq"), content).unwrap();
            let mut store = FileSeqStore::new(dir.path(), "btn-0001").unwrap();
            let err = store.load().unwrap_err();
            assert!(
                matches!(err, SeqFileError::Corrupt { .. }),
                "{content:?}: {err}"
            );
            assert!(err.to_string().contains("btn-0001.seq"), "{err}");
            // The allocator refuses to start rather than reuse numbers.
            assert!(SeqAllocator::start(store, 1, DEFAULT_SEQ_BLOCK).is_err());
        }
    }

    #[test]
    fn an_unreadable_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be: it exists, but cannot be read as one.
        fs::create_dir(dir.path().join("btn-0001.seq")).unwrap();
        let mut store = FileSeqStore::new(dir.path(), "btn-0001").unwrap();
        assert!(matches!(store.load(), Err(SeqFileError::Read { .. })));
    }

    #[test]
    fn a_failed_write_is_returned_and_the_old_mark_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = FileSeqStore::new(dir.path(), "btn-0001").unwrap();
        store.store(128).unwrap();
        // The file cannot be replaced while a directory is in the way of the temporary file.
        fs::create_dir(dir.path().join(".btn-0001.seq.tmp")).unwrap();
        let err = store.store(192).unwrap_err();
        assert!(matches!(err, SeqFileError::Write { .. }), "{err}");
        assert_eq!(store.load().unwrap(), Some(128));
    }

    #[test]
    fn a_store_under_a_regular_file_fails_without_panicking() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        fs::write(&file, "x").unwrap();
        let mut store = FileSeqStore::new(&file, "btn-0001").unwrap();
        assert!(matches!(store.store(64), Err(SeqFileError::Write { .. })));
        assert!(matches!(
            create_seq_dir(&file.join("seq")),
            Err(SeqFileError::CreateDir { .. })
        ));
    }

    #[test]
    fn ids_that_would_name_another_path_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for id in ["", "..", ".hidden", "a/b", "../btn", "btn 1"] {
            assert!(
                matches!(
                    FileSeqStore::new(dir.path(), id),
                    Err(SeqFileError::UnsafeDeviceId(_))
                ),
                "{id:?}"
            );
        }
        assert!(FileSeqStore::new(dir.path(), "btn-0001.v2").is_ok());
    }

    #[test]
    fn an_allocator_restarted_from_the_file_never_reuses_a_number() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileSeqStore::new(dir.path(), "btn-0001").unwrap();
        let mut seqs = SeqAllocator::start(store, 1_000, DEFAULT_SEQ_BLOCK).unwrap();
        assert_eq!(seqs.first_seq(), 1_000, "fresh start at the given number");
        seqs.reserve(1_000).unwrap();
        seqs.reserve(1_001).unwrap();
        let store = FileSeqStore::new(dir.path(), "btn-0001").unwrap();
        let again = SeqAllocator::start(store, 5, DEFAULT_SEQ_BLOCK).unwrap();
        assert_eq!(again.first_seq(), 1_000 + DEFAULT_SEQ_BLOCK);
    }
}
