//! Several replicas on one Redis or Valkey: the shared engine's side of `[cluster]`.
//!
//! Every replica applies one replicated, ordered log of what changes the tracker (a Redis
//! Stream of journal entries: events, clock notes, ticks), so every replica's tracker goes
//! through the same states in the same order and answers alike, and any of them can take
//! over. This module owns the connection to the engine and the log's keys and entries; it
//! never interprets an entry (the tracker's journal format is opaque here) and never applies
//! one itself.

mod claims;
mod identity;
mod lease;
mod log;
mod presence;
mod settings;
mod store;

pub use identity::EngineMark;
pub use lease::{Leadership, MARK_TTL};
pub use log::{
    ClusterError, Entry, EntryId, FileMarks, LogReader, MAX_ACK_TIMEOUT, SharedLog, SharedSnapshot,
};
pub use presence::{Claim, Presence, differing, instance_note};
pub use settings::ClusterSettings;
pub use store::{SharedStore, stored_checkpoints};
