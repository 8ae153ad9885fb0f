//! The error of the contract: a value that breaks a rule, naming the field it came from, or
//! an I/O failure while writing what crosses to another process. Messages never carry secrets.

use std::io;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad mount point URL, option, size, tier, dataset file or flag; names the field.
    #[error("invalid {field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl Error {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// The same error with its field renamed (`tier "mem:x"` -> `parameters.tiers`), for a
    /// caller that knows where the value came from. The message keeps the value's own words.
    pub fn in_field(self, field: impl Into<String>) -> Self {
        match self {
            Error::Invalid {
                field: inner,
                message,
            } => Error::Invalid {
                field: field.into(),
                message: if inner.is_empty() {
                    message
                } else {
                    format!("{inner}: {message}")
                },
            },
            io => io,
        }
    }
}
