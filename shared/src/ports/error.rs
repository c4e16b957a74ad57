//! One error vocabulary for every port: each failure says whether trying again may help, and
//! keeps what caused it. Handlers turn it into an answer in one place (`http::failure`
//! for HTTP, the worker's batch for SQS).

use std::error::Error as StdError;
use thiserror::Error;

/// A failure's cause, kept for logs (`{:#}` / `source()` chains).
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Whether a failed call may succeed if made again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Throttling, timeouts, 5xx, a lost race: retry, answer 503, leave the message on its queue.
    Transient,
    /// The request itself is wrong or the data is broken: retrying cannot help (4xx, dead-letter).
    Permanent,
}

/// What a port (the store, a queue, the recordings bucket, a storefront API) reports.
#[derive(Debug, Error)]
pub enum PortError {
    /// A backing service refused or failed the call.
    #[error("{service} {op} failed: {code}")]
    Service {
        service: &'static str,
        op: &'static str,
        code: String,
        kind: ErrorKind,
        #[source]
        source: BoxError,
    },
    /// A stored item or an answer could not be read back.
    #[error("could not be decoded: {0}")]
    Decode(String),
    /// A value could not be encoded for the service.
    #[error("could not be encoded: {0}")]
    Encode(String),
    /// A conditional write lost to a concurrent one: read again, decide again.
    #[error("a concurrent write changed the item; retry")]
    Conflict,
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    /// A local file (a recording being staged) could not be read or written.
    #[error("file: {0}")]
    File(#[source] std::io::Error),
}

impl PortError {
    /// A service failure whose kind the adapter has decided.
    pub fn service(
        service: &'static str,
        op: &'static str,
        code: impl Into<String>,
        kind: ErrorKind,
        source: impl Into<BoxError>,
    ) -> Self {
        Self::Service { service, op, code: code.into(), kind, source: source.into() }
    }

    /// A transient failure with a plain message, for adapters that have no typed cause and for
    /// tests that inject an outage through a port.
    pub fn unavailable(service: &'static str, op: &'static str, message: impl Into<String>) -> Self {
        let message: String = message.into();
        Self::service(service, op, "Unavailable", ErrorKind::Transient, message)
    }
}

/// Anything a use case can fail with says its kind, so one mapping serves every handler (and
/// `app::retry` decides from it whether to try again).
pub trait Classify {
    fn kind(&self) -> ErrorKind;

    fn is_transient(&self) -> bool {
        self.kind() == ErrorKind::Transient
    }
}

impl Classify for PortError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Service { kind, .. } => *kind,
            Self::Conflict | Self::File(_) => ErrorKind::Transient,
            Self::Decode(_) | Self::Encode(_) | Self::NotFound(_) | Self::Invalid(_) => ErrorKind::Permanent,
        }
    }
}

/// Every cause of `e`, outermost first, joined: what a log line shows.
pub fn chain(e: &(dyn StdError + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        next = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_is_transient_and_a_bad_item_is_not() {
        let throttled = PortError::service(
            "DynamoDB",
            "PutItem",
            "ProvisionedThroughputExceededException",
            ErrorKind::Transient,
            "slow down",
        );
        assert!(throttled.is_transient());
        assert!(PortError::Conflict.is_transient());
        assert!(!PortError::Decode("missing pk".into()).is_transient());
    }

    #[test]
    fn the_cause_chain_reaches_the_log_line() {
        let e = PortError::unavailable("SQS", "SendMessage", "connection reset");
        assert_eq!(chain(&e), "SQS SendMessage failed: Unavailable: connection reset");
    }
}
