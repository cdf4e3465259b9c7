//! The command line: a getopts table with one flag per config key. No IO.
//!
//! (Helper D: replace the stubs; keep the public API.)

use std::fmt;
use std::path::PathBuf;

/// Settings given on the command line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Flags {
    pub config: Option<PathBuf>,
    /// Config keys given as flags (`--data-dir X` is `("data_dir", "X")`), in order.
    pub overrides: Vec<(String, String)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Run(Flags),
    /// `--local-cluster N`; `flags` are passed on to every child.
    LocalCluster {
        nodes: u32,
        flags: Flags,
    },
    Help(String),
    Version,
}

/// A bad command line; `Display` is the one line for stderr (after `raftkv: `).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Parses the arguments after the program name.
pub fn parse(_args: &[String]) -> Result<Action, UsageError> {
    todo!()
}
