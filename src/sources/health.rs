//! A source's readiness, which `/readyz` reports and the source's thread clears when it ends.

use std::sync::atomic::AtomicBool;

/// A source's readiness, cleared when its thread ends for any reason.
#[derive(Debug, Default)]
pub struct Health {
    /// Source name.
    pub name: String,
    /// First scan done and running.
    pub ready: AtomicBool,
}
