//! The one error type of the data path, and its mapping to errno (for FUSE replies) and to
//! gRPC status (for the control service). Messages never carry credentials.

use std::io;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad mount point URL, option, dataset file or flag; names the field.
    #[error("invalid {field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{0}: no such file or directory")]
    NotFound(String),
    #[error("{0}: not a directory")]
    NotADirectory(String),
    #[error("{0}: is a directory")]
    IsADirectory(String),
    #[error("read-only file system")]
    ReadOnly,
    /// The source refused our credentials (HTTP 403, HDFS AccessControlException).
    #[error("{source_name}: access denied: {message}")]
    Denied {
        source_name: String,
        message: String,
    },
    /// The source could not be reached or failed; worth retrying.
    #[error("{source_name}: {message}")]
    Unavailable {
        source_name: String,
        message: String,
    },
    /// The object changed at the source since its attributes were read.
    #[error("{0}: changed at the source while being read")]
    Changed(String),
    /// A cached block failed its checksum; the caller drops it and refetches.
    #[error("cached block {0} is corrupt")]
    Corrupt(String),
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
        matches!(self, Error::Unavailable { .. } | Error::Corrupt(_))
    }

    /// The errno a FUSE reply carries for this error.
    pub fn errno(&self) -> i32 {
        match self {
            Error::Invalid { .. } => libc::EINVAL,
            Error::NotFound(_) => libc::ENOENT,
            Error::NotADirectory(_) => libc::ENOTDIR,
            Error::IsADirectory(_) => libc::EISDIR,
            Error::ReadOnly => libc::EROFS,
            Error::Denied { .. } => libc::EACCES,
            Error::Changed(_) => libc::ESTALE,
            Error::Unavailable { .. } | Error::Corrupt(_) => libc::EIO,
            Error::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
        }
    }
}

impl From<fluid_source::Error> for Error {
    fn from(e: fluid_source::Error) -> Self {
        use fluid_source::Error as S;
        match e {
            S::Invalid { field, message } => Error::Invalid { field, message },
            S::NotFound(p) => Error::NotFound(p),
            S::NotADirectory(p) => Error::NotADirectory(p),
            S::IsADirectory(p) => Error::IsADirectory(p),
            S::Denied {
                source_name,
                message,
            } => Error::Denied {
                source_name,
                message,
            },
            S::Unavailable {
                source_name,
                message,
            } => Error::Unavailable {
                source_name,
                message,
            },
            S::Changed(p) => Error::Changed(p),
            S::Io { context, source } => Error::Io { context, source },
        }
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

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        let msg = e.to_string();
        match e {
            Error::Invalid { .. } => tonic::Status::invalid_argument(msg),
            Error::NotFound(_) => tonic::Status::not_found(msg),
            Error::NotADirectory(_) | Error::IsADirectory(_) | Error::ReadOnly => {
                tonic::Status::failed_precondition(msg)
            }
            Error::Denied { .. } => tonic::Status::permission_denied(msg),
            Error::Unavailable { .. } => tonic::Status::unavailable(msg),
            Error::Changed(_) => tonic::Status::aborted(msg),
            Error::Corrupt(_) | Error::Io { .. } => tonic::Status::internal(msg),
        }
    }
}

/// Errors are shared between the readers that wait on one fetch, so they clone; an I/O
/// error keeps its kind, errno and message.
impl Clone for Error {
    fn clone(&self) -> Self {
        match self {
            Error::Invalid { field, message } => Error::Invalid {
                field: field.clone(),
                message: message.clone(),
            },
            Error::NotFound(p) => Error::NotFound(p.clone()),
            Error::NotADirectory(p) => Error::NotADirectory(p.clone()),
            Error::IsADirectory(p) => Error::IsADirectory(p.clone()),
            Error::ReadOnly => Error::ReadOnly,
            Error::Denied {
                source_name,
                message,
            } => Error::Denied {
                source_name: source_name.clone(),
                message: message.clone(),
            },
            Error::Unavailable {
                source_name,
                message,
            } => Error::Unavailable {
                source_name: source_name.clone(),
                message: message.clone(),
            },
            Error::Changed(p) => Error::Changed(p.clone()),
            Error::Corrupt(k) => Error::Corrupt(k.clone()),
            Error::Io { context, source } => {
                let copy = match source.raw_os_error() {
                    Some(code) => io::Error::from_raw_os_error(code),
                    None => io::Error::new(source.kind(), source.to_string()),
                };
                Error::Io {
                    context: context.clone(),
                    source: copy,
                }
            }
        }
    }
}
