//! The library's error type. Each variant has a short [`Error::metric_label`] for the
//! `weir_operator_reconcile_errors_total{reason}` metric.

use kube::runtime::finalizer;

/// Result with the operator's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a reconcile failed. Permanent problems of an object (invalid spec, conflicts) are not
/// errors: they are reported in its conditions and the reconcile succeeds.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed (transient: the reconcile is retried with backoff).
    #[error("{action}: {source}")]
    Kube {
        /// What was being done, e.g. `apply StatefulSet shop/orders-broker`.
        action: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// Adding or removing the finalizer failed, or the wrapped reconcile failed.
    #[error(transparent)]
    Finalizer(#[from] Box<finalizer::Error<Error>>),
    /// The object lacks metadata the operator needs (name, namespace).
    #[error("object has no {0}")]
    MissingMetadata(&'static str),
    /// Cleanup cannot finish: a broker refused or could not be reached. The finalizer stays.
    #[error("cleanup blocked: {0}")]
    CleanupBlocked(String),
    /// An object could not be converted to JSON.
    #[error("serialising {what}: {source}")]
    Serialize {
        /// What was serialised.
        what: &'static str,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    /// A low-cardinality label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "kube_api",
            Error::Finalizer(inner) => match inner.as_ref() {
                finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e.metric_label(),
                finalizer::Error::AddFinalizer(_) | finalizer::Error::RemoveFinalizer(_) => "finalizer",
                finalizer::Error::UnnamedObject | finalizer::Error::InvalidFinalizer => "invalid_object",
            },
            Error::MissingMetadata(_) => "invalid_object",
            Error::CleanupBlocked(_) => "cleanup_blocked",
            Error::Serialize { .. } => "serialization",
        }
    }

    /// Wraps a client error with what was being done.
    pub fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let action = action.into();
        move |source| Error::Kube { action, source }
    }
}

impl From<finalizer::Error<Error>> for Error {
    fn from(e: finalizer::Error<Error>) -> Self {
        Error::Finalizer(Box::new(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finalizer_errors_report_the_inner_label() {
        let e: Error = finalizer::Error::CleanupFailed(Error::CleanupBlocked("pod down".into())).into();
        assert_eq!(e.metric_label(), "cleanup_blocked");
        assert_eq!(Error::MissingMetadata("namespace").metric_label(), "invalid_object");
    }
}
