//! Sources: where events come from besides `POST /v1/events`.
//!
//! [`file`] tails log files (SPEC §3 `[[sources.file]]`) and [`format`] turns their lines into
//! events. Sources only read and parse; they hand events to [`crate::live::Live`] together
//! with the checkpoint those events reach, and never count anything themselves.

pub mod format;
