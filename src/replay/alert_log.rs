//! Replay's alert transitions, spilled as JSON lines to an anonymous temporary file as they
//! occur (memory stays flat however long the input), and read back for the report.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Seek, Write};

use serde_json::json;

use crate::clock::rfc3339;
use crate::detect::Transition;

/// Alert transitions as JSON lines in an anonymous temporary file.
pub(super) struct AlertLog {
    file: BufWriter<File>,
    pub(super) count: u64,
}

impl AlertLog {
    pub(super) fn new() -> io::Result<AlertLog> {
        Ok(AlertLog {
            file: BufWriter::new(tempfile::tempfile()?),
            count: 0,
        })
    }

    pub(super) fn push(&mut self, t: &Transition) -> io::Result<()> {
        let mut v = json!({
            "ts": rfc3339(t.ts_ms),
            "org": &*t.org,
            "app": t.app.as_deref(),
            "alert": t.alert.as_str(),
            "dimension": t.dimension.map(|d| d.as_str()),
            "severity": t.severity.as_str(),
            "status": t.status.as_str(),
        });
        if let (Some(m), Some(obj)) = (&t.model, v.as_object_mut()) {
            obj.insert("model".into(), json!(&**m));
        }
        serde_json::to_writer(&mut self.file, &v)?;
        self.file.write_all(b"\n")?;
        self.count += 1;
        Ok(())
    }

    /// Reads back every alert line (again for each caller: `--html` and `--json` both do).
    pub(super) fn lines(&mut self) -> io::Result<impl Iterator<Item = io::Result<String>>> {
        self.file.flush()?;
        let mut file = self.file.get_ref().try_clone()?;
        file.rewind()?;
        Ok(BufReader::new(file).lines())
    }
}
