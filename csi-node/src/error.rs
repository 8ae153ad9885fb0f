//! The one error type of the node plugin and its mapping to gRPC status codes (the only place
//! where a status code is chosen). Messages never carry credentials.

use std::io;
use std::path::Path;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A required request field is empty.
    #[error("{0} is required")]
    Missing(&'static str),
    /// A request field has a value we cannot accept; names the field.
    #[error("invalid {field}: {message}")]
    Invalid { field: String, message: String },
    /// The volume, path or sub path does not exist (here).
    #[error("{0}")]
    NotFound(String),
    /// The volume is staged or published here already, in an incompatible way.
    #[error("{0}")]
    AlreadyExists(String),
    /// The call is valid but the node is not in the state it requires.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The volume asks for something the node's administrator does not allow.
    #[error("{0}")]
    Denied(String),
    /// The node holds as many volumes as `--max-volumes` allows.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The volume's daemon cannot be reached right now (it is being restarted).
    #[error("{0}")]
    Unavailable(String),
    #[error("{0} is not implemented by this plugin")]
    Unimplemented(&'static str),
    /// `fluid-fuse` did not start or mount; carries the end of its log.
    #[error("{0}")]
    Daemon(String),
    /// A mount(2)/umount2(2) call failed.
    #[error("{op} {path}: {source}")]
    Mount {
        op: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// The CSI endpoint cannot be bound or served.
    #[error(transparent)]
    Endpoint(#[from] fluid_proto::EndpointError),
    /// A state record that cannot be read or written.
    #[error("state record {path}: {message}")]
    State { path: String, message: String },
    /// Flags that cannot work together; found at start-up.
    #[error("{0}")]
    Config(String),
    /// A call to the Kubernetes API failed (its messages carry no credentials).
    #[error("{context}: {source}")]
    Kube {
        context: String,
        #[source]
        source: kube::Error,
    },
    /// A volume's fluid-fuse answered a forwarded cache call with an error; its code is kept.
    #[error("volume {volume}: {message}")]
    Remote {
        volume: String,
        code: tonic::Code,
        message: String,
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

    pub fn kube(context: impl Into<String>, source: kube::Error) -> Self {
        Error::Kube {
            context: context.into(),
            source,
        }
    }

    pub fn remote(volume: &str, status: &tonic::Status) -> Self {
        Error::Remote {
            volume: volume.to_string(),
            code: status.code(),
            message: status.message().to_string(),
        }
    }

    pub fn mount(op: &'static str, path: &Path, source: io::Error) -> Self {
        Error::Mount {
            op,
            path: path.display().to_string(),
            source,
        }
    }
}

/// Errors of the volume contract (validation of the context, the dataset file).
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
            Error::Remote { code, .. } => tonic::Status::new(code, msg),
            Error::Missing(_) | Error::Invalid { .. } => tonic::Status::invalid_argument(msg),
            Error::NotFound(_) => tonic::Status::not_found(msg),
            Error::AlreadyExists(_) => tonic::Status::already_exists(msg),
            Error::FailedPrecondition(_) => tonic::Status::failed_precondition(msg),
            Error::Denied(_) => tonic::Status::permission_denied(msg),
            Error::ResourceExhausted(_) => tonic::Status::resource_exhausted(msg),
            Error::Unavailable(_) => tonic::Status::unavailable(msg),
            Error::Unimplemented(_) => tonic::Status::unimplemented(msg),
            Error::Daemon(_)
            | Error::Mount { .. }
            | Error::Io { .. }
            | Error::State { .. }
            | Error::Config(_)
            | Error::Endpoint(_) => tonic::Status::internal(msg),
            // The API server is down or refuses us; worth retrying.
            Error::Kube { .. } => tonic::Status::unavailable(msg),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        let code = |e: Error| tonic::Status::from(e).code();
        assert_eq!(
            code(Error::Missing("volume_id")),
            tonic::Code::InvalidArgument
        );
        assert_eq!(code(Error::NotFound("x".into())), tonic::Code::NotFound);
        assert_eq!(
            code(Error::AlreadyExists("x".into())),
            tonic::Code::AlreadyExists
        );
        assert_eq!(
            code(Error::FailedPrecondition("x".into())),
            tonic::Code::FailedPrecondition
        );
        assert_eq!(
            code(Error::Unimplemented("NodeExpandVolume")),
            tonic::Code::Unimplemented
        );
        assert_eq!(
            code(fluid_volume::Error::invalid("subPath", "bad").into()),
            tonic::Code::InvalidArgument
        );
        let s = tonic::Status::from(Error::Missing("volume_id"));
        assert_eq!(s.message(), "volume_id is required");
        let s = tonic::Status::from(Error::remote(
            "pvc-1",
            &tonic::Status::invalid_argument("/nope: no such file or directory"),
        ));
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            s.message(),
            "volume pvc-1: /nope: no such file or directory"
        );
    }
}
