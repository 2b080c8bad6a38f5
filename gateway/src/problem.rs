//! One thing wrong with an input file (a config, a roster), with where it is: shared by config
//! validation and the roster import, owned by neither.

use std::fmt;

/// One thing wrong with a config, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Key path, e.g. `broker.url` or `devices[3].id`, or `file.csv:12`.
    pub path: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}
