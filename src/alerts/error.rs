//! Why one delivery attempt failed, as every sender reports it: worth retrying (with the
//! receiver's `Retry-After`) or not.

use std::time::Duration;

/// Why one delivery attempt failed.
#[derive(Debug, Clone, PartialEq)]
pub enum DeliveryError {
    /// Worth trying again (network, timeout, 408, 429, 5xx, transient SMTP).
    Retry {
        /// What went wrong, with the receiver's answer.
        message: String,
        /// The receiver's `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// Will not succeed by retrying (other 4xx, permanent SMTP errors).
    Permanent {
        /// What went wrong, with the receiver's answer.
        message: String,
    },
}

impl DeliveryError {
    /// What went wrong, with the receiver's answer.
    pub fn message(&self) -> &str {
        match self {
            DeliveryError::Retry { message, .. } | DeliveryError::Permanent { message } => message,
        }
    }
}
