//! Config errors: each names where in the file it is and what was expected.

use std::fmt;
use std::path::PathBuf;

use super::node::{DeError, Loc};

/// One mistake in the config, at a line and column of the file.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigError {
    pub loc: Loc,
    pub message: String,
}

impl ConfigError {
    pub fn new(loc: Loc, message: impl Into<String>) -> Self {
        ConfigError {
            loc,
            message: message.into(),
        }
    }

    /// Turns a deserialization error into a config error, prefixed with what was being read
    /// (`sink `bus``); `fallback` is used when serde did not say where.
    pub fn from_de(context: &str, err: DeError, fallback: Loc) -> Self {
        ConfigError::new(
            err.loc.unwrap_or(fallback),
            format!("{context}: {}", err.message),
        )
    }
}

/// Every mistake found in one config file, in file order.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigErrors {
    pub file: PathBuf,
    pub errors: Vec<ConfigError>,
}

impl ConfigErrors {
    pub fn new(file: impl Into<PathBuf>, mut errors: Vec<ConfigError>) -> Self {
        errors.sort_by_key(|e| e.loc);
        errors.dedup();
        ConfigErrors {
            file: file.into(),
            errors,
        }
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}:{}: {}", self.file.display(), e.loc, e.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Collects errors while a config is validated, so that one mistake never hides another.
#[derive(Debug, Default)]
pub struct Diagnostics {
    errors: Vec<ConfigError>,
}

impl Diagnostics {
    pub fn error(&mut self, loc: Loc, message: impl Into<String>) {
        self.errors.push(ConfigError::new(loc, message));
    }

    pub fn push(&mut self, error: ConfigError) {
        self.errors.push(error);
    }

    pub fn extend(&mut self, errors: impl IntoIterator<Item = ConfigError>) {
        self.errors.extend(errors);
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    pub fn len(&self) -> usize {
        self.errors.len()
    }

    pub fn into_errors(self) -> Vec<ConfigError> {
        self.errors
    }
}
