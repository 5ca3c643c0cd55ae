//! What replay reads and how: the inputs opened (decompressed when they are gzip or zstd),
//! read a chunk at a time on one thread ([`read_in_chunks`]), the line format and defaults
//! they are read with, and why reading failed. Shared by the one-thread replay and
//! [`super::parallel`]; it never decodes or applies anything (its callers do).

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek};
use std::path::PathBuf;

use crate::events::ParseContext;
use crate::events::format::LineFormat;
use crate::events::intake::{LineFramer, archive_format};

/// Why a replay failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// An input could not be opened or read.
    #[error("{path}: {source}")]
    Input {
        /// The input as given.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// The report could not be written (or its temporary file used).
    #[error("writing the report: {0}")]
    Output(#[from] io::Error),
    /// The line format asked for does not compile, or names a source that does not exist.
    #[error("{0}")]
    Format(String),
}

/// How inputs are read: what a file source would read them with.
#[derive(Debug, Clone)]
pub(super) struct Reading {
    /// The source name in logs (`replay`, or `--source`'s).
    pub(super) name: String,
    pub(super) format: LineFormat,
    pub(super) org: Option<String>,
    pub(super) app: Option<String>,
    pub(super) max_line_bytes: usize,
    pub(super) max_event_bytes: usize,
}

impl Reading {
    pub(super) fn context(&self) -> ParseContext<'_> {
        ParseContext {
            default_org: self.org.as_deref(),
            default_app: self.app.as_deref(),
            now_ms: None,
            max_event_bytes: self.max_event_bytes,
        }
    }
}

/// An input as text: a file or standard input, decompressed when its first bytes are a gzip
/// or zstd stream (rotated logs are often compressed); bzip2 and xz are refused by name.
/// `Send`, so that whichever replay thread frames the next block can read it.
pub(super) struct Input {
    reader: Box<dyn Read + Send>,
    /// For a regular file (standard input too, when it is one): a handle sharing the
    /// reader's file offset, and the file's size when it was opened ([`Input::check_whole`]).
    opened: Option<(File, u64)>,
}

/// A handle on `file` sharing its offset (a duplicate of the descriptor: where the reader
/// is, whatever buffers and decompresses on top of it), and its size now, when it is a
/// regular file.
fn regular(file: &File) -> io::Result<Option<(File, u64)>> {
    let meta = file.metadata()?;
    Ok(if meta.is_file() {
        Some((file.try_clone()?, meta.len()))
    } else {
        None
    })
}

/// Opens `input` (`-`: standard input) for reading ([`Input`]).
pub(super) fn open_input(input: &str) -> io::Result<Input> {
    let (raw, opened): (Box<dyn Read + Send>, _) = if input == "-" {
        use std::os::fd::AsFd;
        // Standard input redirected from a file is held to that file's size too; a pipe,
        // a terminal or a closed one is not (and none of that fails the replay).
        let opened = io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .ok()
            .and_then(|fd| regular(&File::from(fd)).ok().flatten());
        // Not the locked handle, which stays on its thread; the 64 KiB buffer below takes
        // the lock once a fill.
        (Box::new(io::stdin()), opened)
    } else {
        let file = File::open(PathBuf::from(input))?;
        let opened = regular(&file)?;
        (Box::new(file), opened)
    };
    let mut buffered = BufReader::with_capacity(1 << 16, raw);
    let head = buffered.fill_buf()?;
    let reader: Box<dyn Read + Send> = match archive_format(head) {
        None => Box::new(buffered),
        Some("gzip") => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Some("zstd") => Box::new(zstd::stream::read::Decoder::with_buffer(buffered)?),
        Some(other) => {
            return Err(io::Error::other(format!(
                "compressed with {other}; decompress it first and replay standard input, e.g. `{other} -dc FILE | ratewarden replay -`"
            )));
        }
    };
    Ok(Input { reader, opened })
}

impl Input {
    /// [`read_more`] from this input: at its end (0), [`Input::check_whole`]; an error,
    /// [`Input::explain`]ed.
    pub(super) fn read_more(&mut self, buf: &mut Vec<u8>, size: usize) -> io::Result<usize> {
        match read_more(&mut self.reader, buf, size) {
            Ok(0) => self.check_whole().map(|()| 0),
            Ok(n) => Ok(n),
            Err(e) => Err(self.explain(e)),
        }
    }

    /// At the end of the input, fails when a regular file was cut short while it was read
    /// (truncated in place, as logrotate's `copytruncate` does to a live log): its last line
    /// read was cut, and the lines after the cut were never read, so a report would count
    /// them as never sent. A file that grew meanwhile is read to its new end, which is no
    /// error.
    fn check_whole(&self) -> io::Result<()> {
        match self.cut() {
            None => Ok(()),
            Some((held, at)) => Err(cut_short(held, at, None)),
        }
    }

    /// `e`, an error reading this input, told as the cut when the file was cut short: a
    /// decompressor then finds its stream ending part way (`incomplete deflate stream`),
    /// which does not say why.
    fn explain(&self, e: io::Error) -> io::Error {
        match self.cut() {
            None => e,
            Some((held, at)) => cut_short(held, at, Some(&e)),
        }
    }

    /// The bytes the file held when opened and where the reader ended, when it ended short
    /// of them and the file is now smaller than it was: both, so that a file whose reported
    /// size exceeds what it holds (sysfs gives 4096 for a few bytes) is not taken for a cut.
    fn cut(&self) -> Option<(u64, u64)> {
        let (file, held) = self.opened.as_ref()?;
        let mut offset = file;
        let at = offset.stream_position().ok()?;
        let now = file.metadata().ok()?.len();
        (at < *held && now < *held).then_some((*held, at))
    }
}

/// The error of an input cut short; `read` is what reading it then said, if it failed.
fn cut_short(held: u64, at: u64, read: Option<&io::Error>) -> io::Error {
    let read = read.map(|e| format!(" ({e})")).unwrap_or_default();
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!(
            "cut short while it was read{read}: it held {held} bytes when opened and ended after \
             {at} of them; the rest was never read (truncated in place, as logrotate's \
             copytruncate does?). Replay a copy that nothing writes to."
        ),
    )
}

/// Bytes read from an input at a time on one thread.
const CHUNK: usize = 1 << 20;

/// Reads every input in turn, a chunk at a time, and hands `feed` each input's own framer
/// (lines of at most `max` bytes), the bytes not consumed yet and whether the input ended;
/// `feed` returns how many it consumed ([`LineFramer::feed`]). The progress `bar` counts the
/// bytes read against `total`.
pub(super) fn read_in_chunks(
    inputs: &[String],
    max: usize,
    total: u64,
    bar: Option<&indicatif::ProgressBar>,
    mut feed: impl FnMut(&mut LineFramer, &[u8], bool) -> io::Result<usize>,
) -> Result<(), ReplayError> {
    let mut done = 0u64;
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK + max.min(CHUNK));
    for input in inputs {
        let input_err = |source| ReplayError::Input {
            path: input.clone(),
            source,
        };
        let mut opened = open_input(input).map_err(input_err)?;
        // Each input is its own stream: a line never continues into the next file.
        let mut framer = LineFramer::new(max);
        buf.clear();
        let mut chunks = 0u64;
        loop {
            let n = opened.read_more(&mut buf, CHUNK).map_err(input_err)?;
            let used = feed(&mut framer, &buf, n == 0)?;
            buf.drain(..used);
            done += n as u64;
            chunks += 1;
            if let Some(bar) = bar
                && chunks.is_multiple_of(4)
            {
                // Decompressed inputs yield more bytes than their files hold.
                bar.set_position(done.min(total));
            }
            if n == 0 {
                break;
            }
        }
    }
    Ok(())
}

/// Appends up to `size` bytes from `reader` to `buf`, fewer only at the end of the input
/// (reads interrupted by a signal are retried, and each call waits for a whole chunk or the
/// end, also on a pipe); returns how many (0 at the end). On an error, bytes read before it
/// may be left in `buf`: the replay stops there.
///
/// A file (or standard input) is read straight into `buf`'s spare capacity: zeroing each
/// megabyte before reading into it was a fortieth of a single-thread replay's instructions.
/// Decompressors, which have no such read, still get each of their reads zeroed by std.
fn read_more(reader: &mut dyn Read, buf: &mut Vec<u8>, size: usize) -> io::Result<usize> {
    buf.reserve(size);
    reader.take(size as u64).read_to_end(buf)
}

/// A progress bar of the bytes read on stderr, when `enabled` (stderr is a terminal).
pub(super) fn progress_bar(enabled: bool, total: u64) -> Option<indicatif::ProgressBar> {
    if !enabled {
        return None;
    }
    let bar = indicatif::ProgressBar::with_draw_target(
        (total > 0).then_some(total),
        indicatif::ProgressDrawTarget::stderr(),
    );
    let style = indicatif::ProgressStyle::with_template(
        "{spinner} replay [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    Some(bar)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Truncates the file at `path` to `len` bytes in place, as `copytruncate` does.
    pub(in crate::replay) fn cut_to(path: &str, len: u64) {
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .unwrap()
            .set_len(len)
            .unwrap();
    }

    /// Asserts that `err` is the input error of `path` cut short, which held `held` bytes
    /// when opened; its text, for further checks.
    pub(in crate::replay) fn assert_cut_short(err: ReplayError, path: &str, held: u64) -> String {
        let text = err.to_string();
        assert!(matches!(err, ReplayError::Input { .. }), "{text}");
        assert!(
            text.starts_with(&format!(
                "{path}: cut short while it was read: it held {held} bytes"
            )),
            "{text}"
        );
        text
    }

    /// A file of `n` lines; its path.
    fn file_of_lines(dir: &tempfile::TempDir, n: usize) -> String {
        let path = dir.path().join("in.jsonl");
        std::fs::write(&path, "{\"org\":\"a\",\"status\":200}\n".repeat(n)).unwrap();
        path.display().to_string()
    }

    /// Reads `path` a chunk at a time, calling `meanwhile` after the first chunk; the lines
    /// framed, or why the reading failed.
    fn lines_read(path: &str, meanwhile: impl FnOnce()) -> Result<usize, ReplayError> {
        let mut meanwhile = Some(meanwhile);
        let mut lines = 0;
        read_in_chunks(&[path.to_string()], 1 << 10, 0, None, |framer, buf, eof| {
            if let Some(f) = meanwhile.take() {
                f();
            }
            Ok(framer.feed(buf, eof, |_| lines += 1))
        })?;
        Ok(lines)
    }

    #[test]
    fn a_file_cut_short_while_it_is_read_fails_the_replay() {
        let dir = tempfile::tempdir().unwrap();
        // Three chunks' worth: the cut comes after the first was read.
        let n = 3 * CHUNK / 26;
        let path = file_of_lines(&dir, n);
        let held = std::fs::metadata(&path).unwrap().len();
        let err = lines_read(&path, || cut_to(&path, 1000)).expect_err("a cut input is an error");
        let text = assert_cut_short(err, &path, held);
        assert!(
            text.contains(&format!("ended after {CHUNK} of them")),
            "{text}"
        );
    }

    #[test]
    fn a_file_read_whole_or_grown_while_it_is_read_is_no_error() {
        let dir = tempfile::tempdir().unwrap();
        let n = 3 * CHUNK / 26;
        let path = file_of_lines(&dir, n);
        assert_eq!(lines_read(&path, || {}).unwrap(), n);
        let grow = || {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap();
            f.write_all(b"{\"org\":\"b\"}\n").unwrap();
        };
        assert_eq!(
            lines_read(&path, grow).unwrap(),
            n + 1,
            "read to its new end"
        );
        // Standard input and other streams have no size to hold them to.
        let input = Input {
            reader: Box::new(io::empty()),
            opened: None,
        };
        assert!(input.check_whole().is_ok());
        // A file whose reported size exceeds what it holds, and which stays that size, was
        // not cut (sysfs reports 4096 bytes for each of its files).
        let sysfs = "/sys/class/net/lo/address";
        if std::fs::metadata(sysfs).is_ok_and(|m| m.len() == 4096) {
            assert_eq!(lines_read(sysfs, || {}).unwrap(), 1);
        }
    }

    #[test]
    fn a_compressed_file_cut_short_is_told_as_cut_not_only_as_a_broken_stream() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl.gz");
        // Ids that do not repeat, so that the stream is several times what one read of the
        // decompressor takes in, and the cut comes after its first chunk.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..3 * CHUNK / 48 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            writeln!(gz, "{{\"org\":\"a\",\"job_id\":\"{x:016x}\"}}").unwrap();
        }
        std::fs::write(&path, gz.finish().unwrap()).unwrap();
        let path = path.display().to_string();
        let held = std::fs::metadata(&path).unwrap().len();
        assert!(
            held > 4 * (1 << 16),
            "{held} bytes: more than the first reads take in"
        );
        let text = lines_read(&path, || cut_to(&path, held / 2))
            .expect_err("a cut input is an error")
            .to_string();
        assert!(
            text.starts_with(&format!("{path}: cut short while it was read (")),
            "{text}"
        );
        assert!(text.contains(&format!("it held {held} bytes")), "{text}");
    }
}
