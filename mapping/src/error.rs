//! Error types: compile-time errors (pointing at the rule, field and
//! column), per-message transform errors (naming the rule) and dataset
//! loading errors (naming the line).

use std::fmt;

/// An error found while compiling [`super::TransformSettings`].
///
/// Displayed as `<location>: <message>[ at column N][; <hint>]`, for example
/// `map[3].expression: unknown function 'ctoF' at column 1; did you mean 'cToF'?`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    /// Where the problem is, e.g. `map[3].expression` or `filter[0].inputs[1]`.
    pub location: String,
    /// What is wrong / what was expected.
    pub message: String,
    /// 1-based character column inside the offending string, when known.
    pub column: Option<usize>,
    /// Optional suggestion, e.g. `did you mean 'cToF'?`.
    pub hint: Option<String>,
}

impl CompileError {
    pub(super) fn new(location: impl Into<String>, message: impl Into<String>) -> Self {
        CompileError {
            location: location.into(),
            message: message.into(),
            column: None,
            hint: None,
        }
    }

    pub(super) fn at(mut self, column: usize) -> Self {
        self.column = Some(column);
        self
    }
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)?;
        if let Some(c) = self.column {
            write!(f, " at column {c}")?;
        }
        if let Some(h) = &self.hint {
            write!(f, "; {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for CompileError {}

/// A syntax/semantic error inside one string (a path or an expression),
/// before it is attached to a rule location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LocalError {
    pub message: String,
    pub column: Option<usize>,
    pub hint: Option<String>,
}

impl LocalError {
    pub(super) fn new(message: impl Into<String>, column: usize) -> Self {
        LocalError {
            message: message.into(),
            column: Some(column),
            hint: None,
        }
    }

    pub(super) fn with_hint(mut self, hint: Option<String>) -> Self {
        self.hint = hint;
        self
    }

    pub(super) fn into_compile(self, location: impl Into<String>) -> CompileError {
        CompileError {
            location: location.into(),
            message: self.message,
            column: self.column,
            hint: self.hint,
        }
    }
}

/// A per-message processing error. The message should be dropped and
/// counted (AIO: `aio_dataflow_messages_dropped_processing_errors`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{rule}: {message}")]
pub struct TransformError {
    /// The rule that failed, e.g. `map[2]`, `filter[0]`, `datasets[0]`.
    pub rule: String,
    /// What went wrong.
    pub message: String,
}

/// An error while parsing reference data (JSON Lines).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct DatasetError {
    /// 1-based line number in the JSON Lines text.
    pub line: usize,
    /// What is wrong with that line.
    pub message: String,
}
