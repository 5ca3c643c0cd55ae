//! The envelope of every record stored as bytes outside the journal and snapshots (batches,
//! batch items, notifications): four bytes naming the record's type, one for its format
//! version, then its body. A record without the envelope is one written before it existed
//! and is read in its older layout; one of a newer version than this binary knows is a clear
//! error, never a guess.

/// The record types, each with its tag and the format version this binary writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A batch's header (`scheduler`).
    Batch,
    /// One request of a batch (`scheduler`).
    BatchItem,
    /// A notification in the outbox (`alerts`).
    Notification,
}

impl Kind {
    /// Its tag: a byte no older layout starts with (`0xFF` would be a string length or an
    /// index of 127 or more continued by this very byte), then `RW` and a letter.
    fn tag(self) -> [u8; 4] {
        match self {
            Kind::Batch => *b"\xFFRWB",
            Kind::BatchItem => *b"\xFFRWI",
            Kind::Notification => *b"\xFFRWN",
        }
    }

    /// The format version written now.
    pub fn version(self) -> u8 {
        match self {
            Kind::Batch | Kind::BatchItem => 3,
            // 2 added the transition's model scope.
            Kind::Notification => 2,
        }
    }

    /// The label value (`record`) of `ratewarden_store_record_errors_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Batch => "batch",
            Kind::BatchItem => "batch_item",
            Kind::Notification => "notification",
        }
    }
}

/// A stored record, opened.
#[derive(Debug, PartialEq, Eq)]
pub enum Opened<'a> {
    /// In the envelope, at the version written now: the body.
    Current(&'a [u8]),
    /// Written before the envelope existed: the whole bytes, in an older layout.
    Legacy(&'a [u8]),
    /// In the envelope at an older version than written now: the version and the body.
    Older(u8, &'a [u8]),
}

/// Why a stored record cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    /// Written by a newer ratewarden.
    #[error(
        "a {kind} record of format {found}, newer than this ratewarden knows ({known}): run the version that wrote it"
    )]
    Newer {
        /// The record type.
        kind: &'static str,
        /// Its version.
        found: u8,
        /// The newest this binary reads.
        known: u8,
    },
    /// The bytes do not decode.
    #[error("a {kind} record that does not decode: {why}")]
    Undecodable {
        /// The record type.
        kind: &'static str,
        /// The decoder's reason.
        why: String,
    },
}

/// `body` in the envelope of `kind` at its current version.
pub fn seal(kind: Kind, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.extend_from_slice(&kind.tag());
    out.push(kind.version());
    out.extend_from_slice(body);
    out
}

/// The body of a stored record of `kind`, or the whole bytes of one written before the
/// envelope; an error for a newer version.
pub fn open(kind: Kind, bytes: &[u8]) -> Result<Opened<'_>, RecordError> {
    match bytes.strip_prefix(&kind.tag()[..]) {
        Some([v, body @ ..]) if *v == kind.version() => Ok(Opened::Current(body)),
        Some([v, ..]) if *v > kind.version() => Err(RecordError::Newer {
            kind: kind.as_str(),
            found: *v,
            known: kind.version(),
        }),
        Some([v, body @ ..]) if *v >= 1 => Ok(Opened::Older(*v, body)),
        Some(_) => Err(RecordError::Undecodable {
            kind: kind.as_str(),
            why: "an envelope of an unknown older version, or cut short".into(),
        }),
        None => Ok(Opened::Legacy(bytes)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_older_ones_are_read_as_they_are() {
        let sealed = seal(Kind::Batch, b"body");
        assert_eq!(
            open(Kind::Batch, &sealed),
            Ok(Opened::Current(&b"body"[..]))
        );
        // A postcard header starts with its id's length (under 127).
        assert_eq!(
            open(Kind::Batch, b"\x14b0123"),
            Ok(Opened::Legacy(&b"\x14b0123"[..]))
        );
        // Another kind's envelope is not this kind's.
        assert_eq!(
            open(Kind::BatchItem, &sealed),
            Ok(Opened::Legacy(&sealed[..]))
        );
    }

    #[test]
    fn a_newer_version_is_a_clear_error() {
        let mut newer = seal(Kind::Notification, b"x");
        newer[4] = 9;
        let e = open(Kind::Notification, &newer).unwrap_err();
        assert!(
            e.to_string().contains("newer than this ratewarden knows"),
            "{e}"
        );
    }
}
