//! How configuration problems are reported: each one is data, a place in the file and a
//! message, collected (never stopping at the first) by every validator alike.

use std::fmt;

/// One problem in a configuration file: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The place in the file, e.g. `routes[0].match.path_prefix`; empty for the whole file.
    pub path: String,
    /// What is wrong, in words a person can act on.
    pub message: String,
}

impl ConfigError {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}
