//! The file tailer: follows the files a glob matches, line by line, across rotations and
//! restarts, counting every line exactly once.
//!
//! A file is known by its identity (`device:inode`) plus a hash of its first bytes, never by
//! its path: a rename keeps the identity, a truncation or a reused inode changes the head.
//! The offset only ever moves past complete lines, and it reaches the store in the same
//! commit as the counts those lines produced ([`Live::apply`] with a checkpoint), so a crash at
//! any moment neither loses nor repeats a line.
//!
//! Rotation by rename + create: the renamed file is drained to its end (also when its new name
//! no longer matches the glob) and the new file is read from its start. Copytruncate: the
//! truncation is noticed (size below the offset, or a different head), the copy holding the
//! old content is found by its head and drained from the old offset, and the file is read
//! again from its start. Both also work when they happened while the daemon was down. Lines
//! written between logrotate's copy and its truncate are lost to every reader; that is
//! copytruncate's own race.

use crate::model::stable_hash;
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::health::Health;
use super::replica::{Replica, Settled};
use std::time::{Duration, Instant};

use crate::config::{FileSourceConfig, ReadFrom};
use crate::events::ParseContext;
use crate::events::intake::{LineFramer, SourceStats, archive_format};
use crate::live::{Live, MAX_PENDING_BYTES};
use crate::metrics::Metrics;
use crate::store::{Checkpoint, FileRef};

/// Bytes of a file's start that identify it together with its inode.
const HEAD_MAX: u64 = 256;
/// How often open files are read (appended lines show up within this).
const POLL: Duration = Duration::from_millis(200);
/// How often the glob is evaluated again (new files show up within this plus `POLL`).
const SCAN: Duration = Duration::from_secs(1);
/// A renamed or deleted file is kept open this long after its end was reached, for writers
/// that have not reopened yet.
const GRACE: Duration = Duration::from_secs(5);
/// Pause between two attempts of a replica's source to learn its offsets from an engine that
/// did not answer.
const RETRY: Duration = Duration::from_secs(1);
/// Bytes read and applied in one step.
const CHUNK: usize = 1 << 20;
/// Most bytes read from one file per poll, so one busy file cannot starve the others.
const MAX_PER_POLL: u64 = 16 << 20;

/// True when an `exclude` glob matches `path`: a glob with a `/` against the full path, one
/// without against the file name (`"*.gz"`, `"access.log.old"`).
fn excluded(exclude: &[glob::Pattern], path: &Path) -> bool {
    let name = path.file_name().map(|n| n.to_string_lossy());
    exclude.iter().any(|p| {
        if p.as_str().contains('/') {
            p.matches_path(path)
        } else {
            name.as_deref().is_some_and(|n| p.matches(n))
        }
    })
}

/// `device:inode`.
fn identity(meta: &std::fs::Metadata) -> String {
    format!("{}:{}", meta.dev(), meta.ino())
}

/// Hash of the first `len` bytes, or `None` if the file is shorter now.
fn head_hash(file: &File, len: u64) -> std::io::Result<Option<u64>> {
    let mut buf = vec![0u8; len as usize];
    let mut got = 0;
    while got < buf.len() {
        let n = file.read_at(&mut buf[got..], got as u64)?;
        if n == 0 {
            return Ok(None);
        }
        got += n;
    }
    Ok(Some(stable_hash(&[&buf])))
}

/// One file being followed.
#[derive(Debug)]
struct Tailed {
    id: String,
    path: PathBuf,
    file: File,
    /// After the last complete line handed to the tracker.
    offset: u64,
    /// Where this run began to follow it (read again from here when a replica's shared log
    /// did not take its first lines and the engine holds no checkpoint for it).
    base: u64,
    head_len: u64,
    head_hash: u64,
    /// Splits what is read into lines; it knows when it is inside an over-long line.
    framer: LineFramer,
    /// When the file was found renamed away or deleted; it is drained, then closed.
    detached: Option<Instant>,
}

impl Tailed {
    fn checkpoint(&self, source: &str) -> Checkpoint {
        Checkpoint {
            source: source.to_string(),
            file: self.id.clone(),
            path: self.path.display().to_string(),
            offset: self.offset,
            head_len: self.head_len as u32,
            head_hash: self.head_hash,
        }
    }
}

/// State of one `[[sources.file]]`.
pub struct FileSource {
    cfg: FileSourceConfig,
    live: Live,
    metrics: Arc<Metrics>,
    files: Vec<Tailed>,
    /// Checkpoints from the store not yet matched to an open file.
    checkpoints: HashMap<String, Checkpoint>,
    /// The source never ran before: `read_from` applies to the files of the first scan.
    first_run: bool,
    /// How long drained rotated files stay open ([`GRACE`]; tests shorten it).
    grace: Duration,
    buf: Vec<u8>,
    /// What the source took in since the metrics were last updated, and its first-lines check.
    stats: SourceStats,
    /// Identities of compressed files the glob matches, skipped (and logged) once.
    archives: Vec<String>,
    /// On a replica of a cluster: the shared engine, that holds the offsets.
    replica: Option<Replica>,
    /// Set when the daemon stops (a replica's source may be waiting for the engine).
    stop: Arc<AtomicBool>,
    /// On a replica: whether the source may read on, or waits for the shared log.
    step: Step,
    /// On a replica: the shared engine's incarnation its checkpoints were written under; a
    /// later one means the engine lost its data, and they are written again.
    incarnation: Option<u64>,
}

/// Where a replica's file source stands with the shared log. A source that is not on a
/// replica is always [`Step::Reading`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Everything read is in the log (or the source is not on a replica).
    Reading,
    /// Commit `seq` holds the last lines read: nothing more is read until it is stored.
    Pending(u64),
    /// The log did not take the last lines: read again from where the engine has each file,
    /// once it answers.
    Resync,
}

impl FileSource {
    /// A source resuming from `checkpoints` (its own are picked out); `started` says whether
    /// it ran before.
    pub fn new(
        cfg: FileSourceConfig,
        live: Live,
        metrics: Arc<Metrics>,
        checkpoints: &[Checkpoint],
        started: bool,
    ) -> FileSource {
        metrics.declare_source(&cfg.name);
        let checkpoints = checkpoints
            .iter()
            .filter(|c| c.source == cfg.name)
            .map(|c| (c.file.clone(), c.clone()))
            .collect();
        FileSource {
            live,
            metrics,
            files: Vec::new(),
            checkpoints,
            first_run: !started,
            grace: GRACE,
            buf: Vec::new(),
            stats: SourceStats::new(&cfg.name),
            archives: Vec::new(),
            replica: None,
            stop: Arc::new(AtomicBool::new(false)),
            step: Step::Reading,
            incarnation: None,
            cfg,
        }
    }

    /// A source of a replica of a cluster: each step is in the shared log before the next
    /// is read ([`Replica`]).
    pub fn on_replica(mut self, replica: Replica) -> FileSource {
        self.replica = Some(replica);
        self
    }

    /// Follows the files until `stop` is set; `health` turns ready after the first scan.
    pub fn run(mut self, stop: Arc<AtomicBool>, health: &Health) {
        tracing::info!(source = %self.cfg.name, path = %self.cfg.path, format = self.cfg.format_name, "file source started");
        self.stop = stop;
        let mut last_scan: Option<Instant> = None;
        while !self.stop.load(Ordering::Acquire) {
            if last_scan.is_none_or(|t| t.elapsed() >= SCAN) {
                let first = last_scan.is_none();
                self.scan(first);
                last_scan = Some(Instant::now());
                if first {
                    if self.first_run {
                        self.live
                            .note_sources(Vec::new(), vec![self.cfg.name.clone()]);
                    }
                    health.ready.store(true, Ordering::Release);
                }
            }
            match self.step {
                Step::Reading => {
                    self.put_back_after_engine_loss();
                    self.poll();
                    if self.step == Step::Reading {
                        std::thread::park_timeout(POLL);
                    }
                }
                Step::Pending(seq) => self.settle(seq),
                Step::Resync => self.resume_from_engine(),
            }
        }
        tracing::info!(source = %self.cfg.name, "file source stopped");
    }

    /// Evaluates the glob: new files, renamed ones, and (at start) files renamed while down.
    fn scan(&mut self, first: bool) {
        let mut seen = Vec::new();
        match glob::glob(&self.cfg.path) {
            Ok(paths) => {
                for path in paths.flatten() {
                    if excluded(&self.cfg.exclude, &path) {
                        continue;
                    }
                    match std::fs::metadata(&path) {
                        Ok(meta) if meta.is_file() => {
                            let id = identity(&meta);
                            seen.push(id.clone());
                            if let Some(t) = self.files.iter_mut().find(|t| t.id == id) {
                                t.path = path;
                                t.detached = None;
                            } else if !self.archives.contains(&id) {
                                self.open(path, &id, first);
                            }
                        }
                        _ => {}
                    }
                }
            }
            Err(e) => tracing::warn!(source = %self.cfg.name, error = %e, "bad glob"),
        }
        self.archives.retain(|id| seen.contains(id));
        // Followed files no longer at a matching path were renamed away or deleted.
        for t in &mut self.files {
            if t.detached.is_none() && !seen.contains(&t.id) {
                let still_there = std::fs::metadata(&t.path).is_ok_and(|m| identity(&m) == t.id);
                if !still_there {
                    tracing::debug!(source = %self.cfg.name, path = %t.path.display(), "file renamed away or deleted; draining it");
                    t.detached = Some(Instant::now());
                }
            }
        }
        if first {
            // Checkpoints the glob did not match: files renamed while the daemon was down.
            let left: Vec<Checkpoint> = self.checkpoints.drain().map(|(_, c)| c).collect();
            let mut forget = Vec::new();
            for cp in left {
                match find_by_identity(&cp) {
                    Some((path, file))
                        if head_hash(&file, cp.head_len as u64).ok().flatten()
                            == Some(cp.head_hash) =>
                    {
                        tracing::info!(source = %self.cfg.name, path = %path.display(), "draining a file rotated while stopped");
                        self.files.push(Tailed {
                            id: cp.file.clone(),
                            path,
                            file,
                            offset: cp.offset,
                            base: cp.offset,
                            head_len: cp.head_len as u64,
                            head_hash: cp.head_hash,
                            framer: LineFramer::new(self.cfg.max_line_bytes),
                            detached: Some(Instant::now()),
                        });
                    }
                    _ => forget.push(FileRef {
                        source: cp.source,
                        file: cp.file,
                    }),
                }
            }
            if !forget.is_empty() {
                self.live.note_sources(forget, Vec::new());
            }
        }
    }

    /// Starts following `path` (identity `id`), resuming from a checkpoint when it has one.
    fn open(&mut self, path: PathBuf, id: &str, first_scan: bool) {
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(source = %self.cfg.name, path = %path.display(), error = %e, "cannot open");
                return;
            }
        };
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        if self.skip_archive(&file, &path, id) {
            return;
        }
        let checkpoint = self.checkpoints.remove(id);
        let resumed = checkpoint.clone().filter(|cp| {
            size >= cp.offset
                && head_hash(&file, cp.head_len as u64).ok().flatten() == Some(cp.head_hash)
        });
        if let (Some(cp), None) = (&checkpoint, &resumed) {
            // Truncated while we were down (copytruncate): its old content is in a copy.
            self.drain_copy(
                &path,
                cp.file.as_str(),
                cp.head_len as u64,
                cp.head_hash,
                cp.offset,
            );
        }
        let (offset, head_len, hash) = match resumed {
            Some(cp) => (cp.offset, cp.head_len as u64, cp.head_hash),
            None => {
                let offset = if first_scan && self.first_run && self.cfg.read_from == ReadFrom::End
                {
                    line_start_at_or_before(&file, size)
                } else {
                    0
                };
                (offset, 0, stable_hash(&[b""]))
            }
        };
        tracing::info!(source = %self.cfg.name, path = %path.display(), offset, "following file");
        let t = Tailed {
            id: id.to_string(),
            path,
            file,
            offset,
            base: offset,
            head_len,
            head_hash: hash,
            framer: LineFramer::new(self.cfg.max_line_bytes),
            detached: None,
        };
        // Record the file at once, so a restart knows it even before it has new lines.
        self.live.apply(
            &mut [],
            self.live.now_ms(),
            Some(t.checkpoint(&self.cfg.name)),
        );
        self.files.push(t);
    }

    fn poll(&mut self) {
        let mut closed = Vec::new();
        let mut caught_up = true;
        // Reading may add a file (a copytruncate copy); it is read in this same poll.
        let mut i = 0;
        while i < self.files.len() {
            if self.live.pending_bytes() > MAX_PENDING_BYTES {
                return;
            }
            match self.read(i) {
                Ok(true) => {
                    closed.push(i);
                    i += 1;
                    continue;
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(source = %self.cfg.name, path = %self.files[i].path.display(), error = %e, "read failed");
                }
            }
            if self.step != Step::Reading {
                // A replica's lines wait for the log: this file is not judged drained (and
                // closed) before they are stored, nor is any other read.
                caught_up = false;
                break;
            }
            let t = &self.files[i];
            let at_end = t.file.metadata().is_ok_and(|m| m.len() <= t.offset);
            caught_up &= at_end;
            if let Some(since) = t.detached
                && at_end
                && since.elapsed() >= self.grace
            {
                closed.push(i);
            }
            i += 1;
        }
        if caught_up {
            // All there is was read: a source whose first lines are all rejected says so now
            // rather than after a hundred lines that may never come.
            self.stats.settle(&self.cfg.format);
        }
        if closed.is_empty() {
            return;
        }
        let mut forget = Vec::new();
        for i in closed.into_iter().rev() {
            let t = self.files.remove(i);
            tracing::info!(source = %self.cfg.name, path = %t.path.display(), "rotated file drained; closed");
            forget.push(FileRef {
                source: self.cfg.name.clone(),
                file: t.id,
            });
        }
        self.live.note_sources(forget, Vec::new());
    }

    /// Reads what was appended to file `i` and hands its lines on. True when the file turned
    /// out to be a compressed archive and is to be closed unread.
    fn read(&mut self, i: usize) -> std::io::Result<bool> {
        let size = self.files[i].file.metadata()?.len();
        self.check_truncation(i, size)?;
        let t = &mut self.files[i];
        if t.head_len < HEAD_MAX && size > t.head_len {
            let len = size.min(HEAD_MAX);
            if let Some(h) = head_hash(&t.file, len)? {
                t.head_len = len;
                t.head_hash = h;
            }
        }
        let mut budget = MAX_PER_POLL;
        let chunk = CHUNK.max(self.cfg.max_line_bytes + 1);
        while self.files[i].offset < size && budget > 0 && self.step == Step::Reading {
            let t = &self.files[i];
            let want = (size - t.offset).min(chunk as u64) as usize;
            self.buf.resize(want, 0);
            let n = t.file.read_at(&mut self.buf, t.offset)?;
            if n == 0 {
                break;
            }
            self.buf.truncate(n);
            if self.files[i].offset == 0
                && let Some(kind) = archive_format(&self.buf)
            {
                // A file that was empty when found and then filled with an archive.
                let (path, id) = (self.files[i].path.clone(), self.files[i].id.clone());
                self.note_archive(kind, &path, &id);
                return Ok(true);
            }
            let used = self.consume(i);
            if used == 0 {
                break; // only a partial line: wait for its newline
            }
            budget = budget.saturating_sub(used as u64);
        }
        Ok(false)
    }

    /// Handles a file that became shorter than the offset or whose head changed: the old
    /// content was copied (copytruncate) or the file was replaced in place.
    fn check_truncation(&mut self, i: usize, size: u64) -> std::io::Result<()> {
        let t = &self.files[i];
        let head_ok = t.head_len == 0 || head_hash(&t.file, t.head_len)? == Some(t.head_hash);
        if size >= t.offset && head_ok {
            return Ok(());
        }
        tracing::info!(source = %self.cfg.name, path = %t.path.display(), old_offset = t.offset, "file truncated; reading it again from the start");
        let (path, id, head_len, head, offset) = (
            t.path.clone(),
            t.id.clone(),
            t.head_len,
            t.head_hash,
            t.offset,
        );
        self.drain_copy(&path, &id, head_len, head, offset);
        let t = &mut self.files[i];
        t.offset = 0;
        t.head_len = 0;
        t.head_hash = stable_hash(&[b""]);
        t.framer = LineFramer::new(self.cfg.max_line_bytes);
        let cp = t.checkpoint(&self.cfg.name);
        self.live.apply(&mut [], self.live.now_ms(), Some(cp));
        Ok(())
    }

    /// Looks beside `path` for the copy of a truncated file (same head, at least `offset`
    /// bytes) and follows it from `offset` until drained.
    fn drain_copy(&mut self, path: &Path, id: &str, head_len: u64, head: u64, offset: u64) {
        if offset == 0 || head_len == 0 {
            return;
        }
        let Some((path, file, copy_id)) = path
            .parent()
            .and_then(|dir| find_copy(dir, id, head_len, head, offset))
        else {
            tracing::warn!(source = %self.cfg.name, path = %path.display(), "truncated, and no copy found: lines after the last read may be lost");
            return;
        };
        if self.files.iter().any(|t| t.id == copy_id) {
            return;
        }
        tracing::info!(source = %self.cfg.name, copy = %path.display(), offset, "draining the rotated copy from the old offset");
        let copy = Tailed {
            id: copy_id,
            path,
            file,
            offset,
            base: offset,
            head_len,
            head_hash: head,
            framer: LineFramer::new(self.cfg.max_line_bytes),
            detached: Some(Instant::now()),
        };
        self.live.apply(
            &mut [],
            self.live.now_ms(),
            Some(copy.checkpoint(&self.cfg.name)),
        );
        self.files.push(copy);
    }

    /// Parses the complete lines in `self.buf` (read at file `i`'s offset), applies them with
    /// the new offset, and returns the bytes consumed.
    fn consume(&mut self, i: usize) -> usize {
        let FileSource {
            cfg,
            live,
            files,
            buf,
            stats,
            ..
        } = self;
        let now = live.now_ms();
        let ctx = ParseContext {
            default_org: cfg.org.as_deref(),
            default_app: cfg.app.as_deref(),
            now_ms: Some(now),
            max_event_bytes: cfg.max_line_bytes,
        };
        let t = &mut files[i];
        let mut events = Vec::new();
        let used = t.framer.feed(buf, false, |line| {
            stats.line(&cfg.format, &ctx, line, |p| events.push(p.event))
        });
        if used == 0 {
            return 0;
        }
        t.offset += used as u64;
        let cp = t.checkpoint(&cfg.name);
        let seq = live.apply(&mut events, now, Some(cp));
        self.metrics.intake(&self.cfg.name, &self.stats.take());
        if self.replica.is_some() {
            self.step = Step::Pending(seq);
        }
        used
    }

    /// On a replica whose shared engine lost its data (a new engine incarnation): writes
    /// every file's checkpoint and the source's start again, so that a restart resumes where
    /// this run is rather than from `read_from`. Only while everything read is stored.
    fn put_back_after_engine_loss(&mut self) {
        let Some(incarnation) = self.live.engine().map(|m| m.incarnation) else {
            return;
        };
        if *self.incarnation.get_or_insert(incarnation) == incarnation {
            return;
        }
        self.incarnation = Some(incarnation);
        tracing::warn!(source = %self.cfg.name, files = self.files.len(), "the shared engine had lost its data: writing this source's checkpoints again");
        self.live
            .note_sources(Vec::new(), vec![self.cfg.name.clone()]);
        for t in &self.files {
            self.live.apply(
                &mut [],
                self.live.now_ms(),
                Some(t.checkpoint(&self.cfg.name)),
            );
        }
    }

    /// A replica's source waits a moment for commit `seq`, its last lines, to be in the log.
    fn settle(&mut self, seq: u64) {
        let Some(replica) = &self.replica else {
            self.step = Step::Reading;
            return;
        };
        match replica.settled(&self.live, seq) {
            Settled::Stored => self.step = Step::Reading,
            Settled::Waiting => {}
            Settled::NotStored => {
                tracing::warn!(source = %self.cfg.name, "the shared log did not take this source's lines; reading them again from the offsets the engine holds once it answers");
                self.step = Step::Resync;
            }
            // The daemon is stopping: the run loop sees its flag soon.
            Settled::Stopping => std::thread::park_timeout(POLL),
        }
    }

    /// A replica's shared log did not take this source's last lines: every file goes back to
    /// where the engine has it (lines of an append that landed after all are not read again).
    /// One attempt; while the engine does not answer the run loop scans and comes back.
    fn resume_from_engine(&mut self) {
        let Some(replica) = &self.replica else {
            self.step = Step::Reading;
            return;
        };
        let stored = match replica.checkpoints(&self.cfg.name) {
            Ok(stored) => stored,
            Err(e) if e.is_unreachable() => {
                tracing::debug!(source = %self.cfg.name, error = %e, "the shared engine does not answer yet");
                std::thread::park_timeout(RETRY);
                return;
            }
            Err(e) => {
                // Refused, not away (a key of another type): said each time, as nothing is
                // read until it is mended.
                tracing::error!(source = %self.cfg.name, error = %e, "cannot read this source's checkpoints from the shared engine; reading nothing until it can");
                std::thread::park_timeout(RETRY * 10);
                return;
            }
        };
        for t in &mut self.files {
            match stored.get(&t.id) {
                Some(cp) => {
                    t.offset = cp.offset;
                    t.head_len = cp.head_len as u64;
                    t.head_hash = cp.head_hash;
                }
                None => t.offset = t.base,
            }
            t.framer = LineFramer::new(self.cfg.max_line_bytes);
        }
        self.step = Step::Reading;
        tracing::info!(source = %self.cfg.name, "the shared engine answers again; reading on");
    }

    /// True (and logged once) when `file` is a compressed archive, which is never tailed.
    fn skip_archive(&mut self, file: &File, path: &Path, id: &str) -> bool {
        let mut head = [0u8; 6];
        let n = file.read_at(&mut head, 0).unwrap_or(0);
        match archive_format(&head[..n]) {
            Some(kind) => {
                self.note_archive(kind, path, id);
                true
            }
            None => false,
        }
    }

    fn note_archive(&mut self, kind: &str, path: &Path, id: &str) {
        tracing::info!(source = %self.cfg.name, path = %path.display(), format = kind, "skipping a compressed file: archives are not tailed (add it to exclude to silence this)");
        self.metrics.file_skipped(&self.cfg.name, "compressed");
        self.archives.push(id.to_string());
    }
}

/// Offset of the start of the line that contains byte `size` (so `read_from = "end"` never
/// starts inside a line still being written).
fn line_start_at_or_before(file: &File, size: u64) -> u64 {
    let from = size.saturating_sub(CHUNK as u64);
    let mut buf = vec![0u8; (size - from) as usize];
    match file.read_at(&mut buf, from) {
        Ok(n) => match memchr::memrchr(b'\n', &buf[..n]) {
            Some(i) => from + i as u64 + 1,
            None => from,
        },
        Err(_) => size,
    }
}

/// The file with the checkpoint's identity, looked for in the directory it was last seen in.
fn find_by_identity(cp: &Checkpoint) -> Option<(PathBuf, File)> {
    let dir = Path::new(&cp.path).parent()?;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let meta = entry.metadata().ok()?;
        if meta.is_file() && identity(&meta) == cp.file {
            let path = entry.path();
            let file = File::open(&path).ok()?;
            return Some((path, file));
        }
    }
    None
}

/// A copy of a truncated file: another file in `dir` with the same head and at least
/// `min_size` bytes; the most recently modified wins.
fn find_copy(
    dir: &Path,
    not: &str,
    head_len: u64,
    head: u64,
    min_size: u64,
) -> Option<(PathBuf, File, String)> {
    let mut best: Option<(std::time::SystemTime, PathBuf, File, String)> = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        let id = identity(&meta);
        if !meta.is_file() || id == not || meta.len() < min_size {
            continue;
        }
        let Ok(file) = File::open(entry.path()) else {
            continue;
        };
        if head_hash(&file, head_len).ok().flatten() != Some(head) {
            continue;
        }
        let modified = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
        if best.as_ref().is_none_or(|(m, ..)| modified > *m) {
            best = Some((modified, entry.path(), file, id));
        }
    }
    best.map(|(_, p, f, id)| (p, f, id))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::clock::SystemClock;
    use crate::config::Config;
    use crate::model::Dimension;
    use crate::tracker::Tracker;

    struct Fixture {
        dir: Arc<tempfile::TempDir>,
        live: Live,
        metrics: Arc<Metrics>,
        config: Config,
    }

    impl Fixture {
        fn new(extra: &str) -> Fixture {
            Fixture::at(Arc::new(tempfile::tempdir().unwrap()), extra)
        }

        /// The same directory with a fresh tracker: the daemon after a restart.
        fn restarted(&self) -> Fixture {
            Fixture::at(self.dir.clone(), "")
        }

        fn at(dir: Arc<tempfile::TempDir>, extra: &str) -> Fixture {
            let config = Config::parse(
                &format!(
                    "[[sources.file]]\nname = \"t\"\npath = \"{}/*.log\"\norg = \"acme\"\nmax_line_bytes = 100\n{extra}",
                    dir.path().display()
                ),
                "t.toml",
            )
            .unwrap();
            let live = Live::in_memory(Tracker::new(&config), Arc::new(SystemClock));
            let metrics = Arc::new(Metrics::new(Arc::new(live.clone()), &config));
            Fixture {
                dir,
                live,
                metrics,
                config,
            }
        }

        fn source(&self, checkpoints: &[Checkpoint], started: bool) -> FileSource {
            let mut s = FileSource::new(
                self.config.sources[0].clone(),
                self.live.clone(),
                self.metrics.clone(),
                checkpoints,
                started,
            );
            s.grace = Duration::ZERO;
            s
        }

        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }

        fn append(&self, name: &str, bytes: impl AsRef<[u8]>) {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.path(name))
                .unwrap();
            f.write_all(bytes.as_ref()).unwrap();
        }

        fn truncate(&self, name: &str) {
            std::fs::OpenOptions::new()
                .write(true)
                .open(self.path(name))
                .unwrap()
                .set_len(0)
                .unwrap();
        }

        /// logrotate's `copytruncate`: copy to `to`, then empty the original in place.
        fn copytruncate(&self, name: &str, to: &str) {
            std::fs::copy(self.path(name), self.path(to)).unwrap();
            self.truncate(name);
        }

        fn lines(&self, name: &str, n: usize) {
            self.append(name, "{\"status\":200}\n".repeat(n));
        }

        fn counted(&self) -> u64 {
            let now = self.live.now_ms();
            self.live.with_tracker(|t| {
                t.snapshot(now)
                    .iter()
                    .find(|o| &*o.org == "acme")
                    .and_then(|o| o.usage_of(Dimension::Daily))
                    .unwrap_or(0)
            })
        }

        fn rejected(&self, reason: &str, n: u64) -> bool {
            self.metrics.encode(false).unwrap().contains(&format!(
                "ratewarden_events_rejected_total{{source=\"t\",reason=\"{reason}\"}} {n}"
            ))
        }
    }

    fn step(s: &mut FileSource, first: bool) {
        s.scan(first);
        s.poll();
    }

    #[test]
    fn partial_lines_wait_for_their_newline() {
        let f = Fixture::new("");
        f.lines("a.log", 2);
        f.append("a.log", "{\"sta");
        let mut s = f.source(&[], false);
        step(&mut s, true);
        assert_eq!(f.counted(), 2);
        f.append("a.log", "tus\":200}\n");
        step(&mut s, false);
        assert_eq!(f.counted(), 3);
        assert_eq!(
            s.files[0].offset,
            std::fs::metadata(f.path("a.log")).unwrap().len()
        );
    }

    #[test]
    fn long_lines_and_invalid_utf8_are_rejected_and_the_stream_goes_on() {
        let f = Fixture::new("");
        f.lines("a.log", 1);
        f.append("a.log", format!("{{\"model\":\"{}\"}}\n", "m".repeat(150)));
        f.append("a.log", "{\"status\":200,\"app\":\"\u{00e9}\"}\n");
        f.append("a.log", b"{\"app\":\"\xff\"}\n");
        // A long line still being written: dropped as it arrives, counted once when it ends.
        f.append("a.log", "x".repeat(150));
        let mut s = f.source(&[], false);
        step(&mut s, true);
        assert!(s.files[0].framer.skipping());
        f.append("a.log", "y".repeat(50));
        step(&mut s, false);
        f.append("a.log", "z\n");
        f.lines("a.log", 1);
        step(&mut s, false);
        assert_eq!(
            f.counted(),
            3,
            "two plain lines and the one with an escaped é"
        );
        assert!(f.rejected("too_large", 2));
        assert!(f.rejected("invalid_json", 1), "invalid UTF-8");
    }

    #[test]
    fn rename_rotation_drains_the_old_file_and_reads_the_new_one() {
        let f = Fixture::new("");
        f.lines("a.log", 3);
        let mut s = f.source(&[], false);
        step(&mut s, true);
        f.lines("a.log", 2); // written just before the rotation, not read yet
        std::fs::rename(f.path("a.log"), f.path("a.log.1")).unwrap();
        f.lines("a.log.1", 1); // the writer had not reopened yet
        f.lines("a.log", 4);
        step(&mut s, false);
        assert_eq!(f.counted(), 10);
        step(&mut s, false);
        assert_eq!(s.files.len(), 1, "the drained rotated file is closed");
        assert!(s.files[0].path.ends_with("a.log"));
    }

    #[test]
    fn copytruncate_drains_the_copy_from_the_old_offset() {
        let f = Fixture::new("");
        f.lines("a.log", 3);
        let mut s = f.source(&[], false);
        step(&mut s, true);
        f.lines("a.log", 2);
        f.copytruncate("a.log", "a.log.1");
        f.lines("a.log", 1);
        step(&mut s, false);
        assert_eq!(f.counted(), 6, "3 read before, 2 from the copy, 1 new");
    }

    #[test]
    fn copytruncate_that_grew_past_the_offset_is_noticed_by_its_head() {
        let f = Fixture::new("");
        f.append("a.log", "{\"status\":200,\"app\":\"first\"}\n");
        let mut s = f.source(&[], false);
        step(&mut s, true);
        f.truncate("a.log");
        f.lines("a.log", 5);
        step(&mut s, false);
        assert_eq!(f.counted(), 6);
    }

    #[test]
    fn deleted_files_are_drained() {
        let f = Fixture::new("");
        f.lines("a.log", 2);
        let mut s = f.source(&[], false);
        step(&mut s, true);
        let mut open = std::fs::OpenOptions::new()
            .append(true)
            .open(f.path("a.log"))
            .unwrap();
        std::fs::remove_file(f.path("a.log")).unwrap();
        open.write_all(b"{\"status\":200}\n{\"status\":200}\n")
            .unwrap();
        step(&mut s, false);
        assert_eq!(f.counted(), 4);
        step(&mut s, false);
        assert!(s.files.is_empty());
    }

    #[test]
    fn resumes_from_a_checkpoint_and_ignores_a_reused_inode() {
        let f = Fixture::new("");
        f.lines("a.log", 3);
        let mut first = f.source(&[], false);
        step(&mut first, true);
        let cp = first.files[0].checkpoint("t");
        assert_eq!(f.counted(), 3);
        f.lines("a.log", 2);
        // A restart: a fresh tracker counts only the 2 new lines.
        let g = f.restarted();
        step(&mut g.source(std::slice::from_ref(&cp), true), true);
        assert_eq!(g.counted(), 2);
        // Same inode, different head: not the checkpointed file, read from the start.
        let other = Fixture::new("");
        other.append("a.log", "{\"status\":500}\n".repeat(5).as_str());
        let p = other.path("a.log");
        let reused = Checkpoint {
            file: identity(&std::fs::metadata(&p).unwrap()),
            path: p.display().to_string(),
            ..cp
        };
        let mut fresh = other.source(&[reused], true);
        step(&mut fresh, true);
        assert_eq!(other.counted(), 5);
    }

    #[test]
    fn read_from_end_applies_only_at_the_first_start() {
        let f = Fixture::new("read_from = \"end\"\n");
        f.lines("a.log", 4);
        f.append("a.log", "{\"stat");
        let mut s = f.source(&[], false);
        step(&mut s, true);
        assert_eq!(f.counted(), 0);
        f.append("a.log", "us\":200}\n");
        step(&mut s, false);
        assert_eq!(
            f.counted(),
            1,
            "the partial line at the end is read once completed"
        );
        f.lines("b.log", 2);
        step(&mut s, false);
        assert_eq!(
            f.counted(),
            3,
            "files that appear later are read from the start"
        );
        // After the first start, files without a checkpoint are read from the start.
        let g = Fixture::new("read_from = \"end\"\n");
        g.lines("a.log", 4);
        let mut later = g.source(&[], true);
        step(&mut later, true);
        assert_eq!(g.counted(), 4);
    }

    #[test]
    fn rotations_while_stopped_are_found() {
        // Rename + create while down: the old file is found by its inode in the directory.
        let f = Fixture::new("");
        f.lines("a.log", 3);
        let mut before = f.source(&[], false);
        step(&mut before, true);
        let cp = before.files[0].checkpoint("t");
        drop(before);
        f.lines("a.log", 2);
        std::fs::rename(f.path("a.log"), f.path("a.log.1")).unwrap();
        f.lines("a.log", 4);
        let g = f.restarted();
        step(&mut g.source(&[cp], true), true);
        assert_eq!(
            g.counted(),
            6,
            "2 left in the renamed file, 4 in the new one"
        );

        // Copytruncate while down: the copy is found by its head.
        let h = Fixture::new("");
        h.lines("a.log", 3);
        let mut before = h.source(&[], false);
        step(&mut before, true);
        let cp = before.files[0].checkpoint("t");
        drop(before);
        h.lines("a.log", 2);
        h.copytruncate("a.log", "a.log.1");
        h.lines("a.log", 1);
        let k = h.restarted();
        step(&mut k.source(&[cp], true), true);
        assert_eq!(k.counted(), 3, "2 from the copy, 1 new");
    }

    #[test]
    fn tiny_files_are_identified_as_they_grow() {
        let f = Fixture::new("");
        f.append("a.log", "{}\n");
        let mut s = f.source(&[], false);
        step(&mut s, true);
        assert_eq!(s.files[0].head_len, 3);
        f.lines("a.log", 20);
        step(&mut s, false);
        assert_eq!(s.files[0].head_len, HEAD_MAX);
        assert_eq!(f.counted(), 21);
    }
}
