//! The sources' error type. The data path maps it into its own (and from there to errno and
//! gRPC status, in one place); messages never carry credentials.

use std::io;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad mount point URL, option or path; names the field.
    #[error("invalid {field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{0}: no such file or directory")]
    NotFound(String),
    #[error("{0}: not a directory")]
    NotADirectory(String),
    #[error("{0}: is a directory")]
    IsADirectory(String),
    /// The store refused our credentials (HTTP 403, HDFS AccessControlException).
    #[error("{source_name}: access denied: {message}")]
    Denied {
        source_name: String,
        message: String,
    },
    /// The store could not be reached or failed; worth retrying.
    #[error("{source_name}: {message}")]
    Unavailable {
        source_name: String,
        message: String,
    },
    /// The object changed at the store since its attributes were read.
    #[error("{0}: changed at the source while being read")]
    Changed(String),
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

    pub fn unavailable(source_name: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Unavailable {
            source_name: source_name.into(),
            message: message.into(),
        }
    }

    /// Whether trying the same call again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }
}

impl From<fluid_volume::Error> for Error {
    fn from(e: fluid_volume::Error) -> Self {
        match e {
            fluid_volume::Error::Invalid { field, message } => Error::Invalid { field, message },
            fluid_volume::Error::Io { context, source } => Error::Io { context, source },
        }
    }
}
