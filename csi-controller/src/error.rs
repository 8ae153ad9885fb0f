//! The one error type of the controller, and its one mapping to a gRPC status. Messages name
//! the request field at fault and never carry secret values.

use std::io;
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field (or parameter) is missing or wrong: INVALID_ARGUMENT.
    #[error("invalid {field}: {message}")]
    Invalid { field: String, message: String },
    /// The volume or dataset named by the request does not exist: NOT_FOUND.
    #[error("{0}")]
    NotFound(String),
    /// A volume of that name exists with other arguments: ALREADY_EXISTS.
    #[error("{0}")]
    AlreadyExists(String),
    /// A ListVolumes starting_token that this plugin did not hand out: ABORTED.
    #[error("invalid starting_token {0:?}: not a token returned by ListVolumes")]
    BadToken(String),
    /// An RPC (or a feature of one) this plugin does not offer: UNIMPLEMENTED.
    #[error("{0} is not implemented by this plugin")]
    Unimplemented(&'static str),
    /// The Dataset catalogue (`--datasets`) is unreadable or wrong; names the document and field.
    #[error("datasets file {file}: {location}: {message}", file = .file.display())]
    Catalogue {
        file: PathBuf,
        /// `document 2 (ml/imagenet) spec.mounts[0].mountPoint`, or just `document 2`.
        location: String,
        message: String,
    },
    /// A volume record in the state directory is unreadable.
    #[error("volume record {}: {message}", .path.display())]
    Record { path: PathBuf, message: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Endpoint(#[from] fluid_proto::EndpointError),
    /// A call to the Kubernetes API server failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A Dataset cannot be served as written (a bad field, a missing Secret or key); the
    /// message names the field or Secret, never a value.
    #[error("Dataset {dataset}: {message}")]
    Dataset { dataset: String, message: String },
    /// The admission webhook cannot start or answer: the message names the flag and file at
    /// fault (never a key's contents).
    #[error("webhook: {0}")]
    Webhook(String),
    /// A node's cache endpoint could not be reached or refused a call.
    #[error("node {node}: {message}")]
    Node { node: String, message: String },
    /// A Dataset being deleted is still mounted by these pods.
    #[error("Dataset {dataset} is in use by pod(s) {}", .pods.join(", "))]
    InUse { dataset: String, pods: Vec<String> },
}

impl Error {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn dataset(dataset: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Dataset {
            dataset: dataset.into(),
            message: message.into(),
        }
    }

    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// An error of the volume contract about a request value: its field name is prefixed
    /// with where the value came from (e.g. `parameters`), so the caller sees which one.
    pub fn from_data(prefix: &str, e: fluid_volume::Error) -> Self {
        match e {
            fluid_volume::Error::Invalid { field, message } => Error::Invalid {
                field: format!("{prefix}{field}"),
                message,
            },
            other => Error::invalid(prefix.trim_end_matches('.'), other.to_string()),
        }
    }
}

/// A value the volume contract refused, its field already named by the caller.
impl From<fluid_volume::Error> for Error {
    fn from(e: fluid_volume::Error) -> Self {
        Error::from_data("", e)
    }
}

/// The one place errors become gRPC statuses.
impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        let msg = e.to_string();
        match e {
            Error::Invalid { .. } => tonic::Status::invalid_argument(msg),
            Error::NotFound(_) => tonic::Status::not_found(msg),
            Error::AlreadyExists(_) => tonic::Status::already_exists(msg),
            Error::BadToken(_) => tonic::Status::aborted(msg),
            Error::Unimplemented(_) => tonic::Status::unimplemented(msg),
            Error::Dataset { .. } => tonic::Status::failed_precondition(msg),
            Error::Kube(_) | Error::InUse { .. } | Error::Node { .. } => {
                tonic::Status::unavailable(msg)
            }
            Error::Catalogue { .. }
            | Error::Record { .. }
            | Error::Io { .. }
            | Error::Endpoint(_)
            | Error::Webhook(_) => tonic::Status::internal(msg),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_to_status_codes() {
        let code = |e: Error| tonic::Status::from(e).code();
        assert_eq!(
            code(Error::invalid("name", "missing")),
            tonic::Code::InvalidArgument
        );
        assert_eq!(code(Error::NotFound("x".into())), tonic::Code::NotFound);
        assert_eq!(
            code(Error::AlreadyExists("x".into())),
            tonic::Code::AlreadyExists
        );
        assert_eq!(code(Error::BadToken("x".into())), tonic::Code::Aborted);
        assert_eq!(
            code(Error::Unimplemented("GetCapacity")),
            tonic::Code::Unimplemented
        );
        let status = tonic::Status::from(Error::from_data(
            "parameters.",
            fluid_volume::Error::invalid("blockSize", "bad size"),
        ));
        assert!(
            status.message().contains("parameters.blockSize"),
            "{}",
            status.message()
        );
    }
}
