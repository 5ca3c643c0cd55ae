//! The CLI commands that are clients: of a running daemon (`status`, `batch …`, `health`,
//! through [`api::Api`]) or of the alert channels (`alerts test`). Each turns its answer into
//! the text the command prints; none holds state or starts a task. The admin token comes
//! from `RATEWARDEN_ADMIN_TOKEN` (read by `main`).

pub mod alerts_test;
pub mod api;
pub mod batch;
pub mod health;
pub mod status;

pub use api::{Api, ClientError};
