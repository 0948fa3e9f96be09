//! Segment files: naming, sparse indexes, and a framed reader shared by recovery and readers.
//!
//! A segment is three files named by the offset of its first record (its base):
//! `00000000000000000000.log` holds frames, `.index` holds `(relative offset u32, position u32)`
//! entries, `.timeindex` holds `(timestamp u64, relative offset u32)` entries. Both indexes are
//! sparse (one entry every `index_interval_bytes`) and can always be rebuilt from the log file.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use runnel_clock::Micros;

use crate::error::{LogError, Result};
use crate::record::{FRAME_HEADER, MIN_BODY, parse_frame_header, peek_offset_timestamp};

pub(crate) const LOG_EXT: &str = "log";
pub(crate) const INDEX_EXT: &str = "index";
pub(crate) const TIME_INDEX_EXT: &str = "timeindex";
pub(crate) const INDEX_ENTRY: usize = 8;
pub(crate) const TIME_INDEX_ENTRY: usize = 12;

/// What the log knows about one segment without opening it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentMeta {
    /// Offset of the segment's first record.
    pub base: u64,
    /// Offset after the segment's last record.
    pub next: u64,
    /// Bytes in the log file.
    pub size: u64,
    /// Timestamp of the newest record (0 when empty).
    pub max_ts: Micros,
}

pub(crate) fn segment_path(dir: &Path, base: u64, ext: &str) -> PathBuf {
    dir.join(format!("{base:020}.{ext}"))
}

/// Parses `00000000000000000042.log` into `(42, "log")`.
pub(crate) fn parse_segment_name(name: &str) -> Option<(u64, &str)> {
    let (stem, ext) = name.split_once('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let base = stem.parse().ok()?;
    [LOG_EXT, INDEX_EXT, TIME_INDEX_EXT]
        .into_iter()
        .find(|known| *known == ext)
        .map(|ext| (base, ext))
}

/// Builds the sparse offset and time indexes as records are written or scanned, so the writer
/// and recovery produce identical index files.
#[derive(Debug, Clone)]
pub(crate) struct IndexBuilder {
    interval: u64,
    bytes_since_entry: u64,
    last_time_entry: Option<Micros>,
    /// Entries not yet written to the `.index` file.
    pub index: Vec<u8>,
    /// Entries not yet written to the `.timeindex` file.
    pub time_index: Vec<u8>,
}

impl IndexBuilder {
    pub fn new(interval: u32) -> Self {
        Self {
            interval: interval as u64,
            bytes_since_entry: 0,
            last_time_entry: None,
            index: Vec::new(),
            time_index: Vec::new(),
        }
    }

    /// Notes a record of `frame_len` bytes at `position` with relative offset `relative`.
    pub fn on_record(&mut self, relative: u32, position: u32, timestamp: Micros, frame_len: usize) {
        if self.bytes_since_entry >= self.interval {
            self.index.extend_from_slice(&relative.to_le_bytes());
            self.index.extend_from_slice(&position.to_le_bytes());
            self.push_time_entry(timestamp, relative);
            self.bytes_since_entry = 0;
        }
        self.bytes_since_entry += frame_len as u64;
    }

    /// Records the segment's newest record in the time index when sealing it.
    pub fn seal(&mut self, last_relative: u32, max_ts: Micros) {
        self.push_time_entry(max_ts, last_relative);
    }

    fn push_time_entry(&mut self, timestamp: Micros, relative: u32) {
        if self.last_time_entry.is_none_or(|last| timestamp > last) {
            self.time_index.extend_from_slice(&timestamp.to_le_bytes());
            self.time_index.extend_from_slice(&relative.to_le_bytes());
            self.last_time_entry = Some(timestamp);
        }
    }

    /// Empties the pending entries (after they were written).
    pub fn clear_pending(&mut self) {
        self.index.clear();
        self.time_index.clear();
    }
}

/// Offset-index entries `(relative, position)` of a file's bytes, or `None` when the bytes are
/// not a well-formed index for a segment of `size` bytes and `count` records.
pub(crate) fn parse_offset_index(bytes: &[u8], size: u64, count: u64) -> Option<Vec<(u32, u32)>> {
    if !bytes.len().is_multiple_of(INDEX_ENTRY) {
        return None;
    }
    let mut entries = Vec::with_capacity(bytes.len() / INDEX_ENTRY);
    let mut previous: Option<(u32, u32)> = None;
    for chunk in bytes.chunks_exact(INDEX_ENTRY) {
        let relative = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        let position = u32::from_le_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]);
        if relative as u64 >= count || position as u64 >= size || position == 0 {
            return None;
        }
        if let Some((r, p)) = previous
            && (relative <= r || position <= p)
        {
            return None;
        }
        previous = Some((relative, position));
        entries.push((relative, position));
    }
    Some(entries)
}

/// Time-index entries `(timestamp, relative)`, or `None` when malformed.
pub(crate) fn parse_time_index(bytes: &[u8], count: u64) -> Option<Vec<(Micros, u32)>> {
    if !bytes.len().is_multiple_of(TIME_INDEX_ENTRY) {
        return None;
    }
    let mut entries = Vec::with_capacity(bytes.len() / TIME_INDEX_ENTRY);
    let mut previous: Option<(Micros, u32)> = None;
    for chunk in bytes.chunks_exact(TIME_INDEX_ENTRY) {
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&chunk[..8]);
        let timestamp = u64::from_le_bytes(ts);
        let relative = u32::from_le_bytes([chunk[8], chunk[9], chunk[10], chunk[11]]);
        if relative as u64 >= count {
            return None;
        }
        if let Some((t, r)) = previous
            && (timestamp <= t || relative < r)
        {
            return None;
        }
        previous = Some((timestamp, relative));
        entries.push((timestamp, relative));
    }
    Some(entries)
}

/// Reads a whole (small) index file; a missing file reads as `None`.
pub(crate) fn read_optional(path: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LogError::io(format!("reading {}", path.display()), e)),
    }
}

/// Replaces a file's contents and syncs it.
pub(crate) fn rewrite_file(path: &Path, bytes: &[u8]) -> Result<File> {
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .read(true)
        .truncate(true)
        .open(path)
        .map_err(|e| LogError::io(format!("creating {}", path.display()), e))?;
    file.write_all(bytes)
        .and_then(|_| file.sync_data())
        .map_err(|e| LogError::io(format!("writing {}", path.display()), e))?;
    Ok(file)
}

/// Opens a file for appending (creating it if needed).
pub(crate) fn open_append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| LogError::io(format!("opening {}", path.display()), e))
}

/// Makes the directory's entries (new or removed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| LogError::io(format!("syncing directory {}", dir.display()), e))
}

/// What the next frame in a file turned out to be.
#[derive(Debug)]
pub(crate) enum FrameRead {
    /// A whole frame whose checksum matches; `body` excludes the 8-byte frame header.
    Frame { position: u64, body: Bytes },
    /// The file ends exactly at a frame boundary.
    End,
    /// The bytes at `position` are not a valid frame (torn or corrupt).
    Bad { position: u64, reason: String },
}

/// Reads checksummed frames sequentially from a segment file through a large buffer.
pub(crate) struct FrameReader {
    file: File,
    path: PathBuf,
    buf: BytesMut,
    /// File position of `buf[0]`.
    buf_pos: u64,
    chunk: usize,
}

impl FrameReader {
    pub fn open(path: &Path, position: u64, chunk: usize) -> std::io::Result<Self> {
        let mut file = File::open(path)?;
        file.seek(SeekFrom::Start(position))?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
            buf: BytesMut::new(),
            buf_pos: position,
            chunk,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// File position of the next unread frame.
    pub fn position(&self) -> u64 {
        self.buf_pos
    }

    /// Ensures `n` bytes are buffered, reading more if needed; false when the file is shorter.
    ///
    /// It asks for a chunk, but no more than the file holds past the buffer: at the tail of a
    /// live log that is a few records, and zeroing a whole chunk of fresh memory for each such
    /// read cost more than the read itself (a quarter of a saga run's CPU went to the kernel
    /// clearing pages for these buffers).
    fn fill(&mut self, n: usize) -> std::io::Result<bool> {
        while self.buf.len() < n {
            let start = self.buf.len();
            let file_len = self.file.metadata()?.len();
            let held = file_len.saturating_sub(self.buf_pos + start as u64);
            let held = usize::try_from(held).unwrap_or(usize::MAX);
            let want = (n - start).max(self.chunk.min(held));
            self.buf.resize(start + want, 0);
            let read = loop {
                match self.file.read(&mut self.buf[start..]) {
                    Ok(read) => break read,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        self.buf.truncate(start);
                        return Err(e);
                    }
                }
            };
            self.buf.truncate(start + read);
            if read == 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Reads the next frame, verifying its length and checksum.
    pub fn next_frame(&mut self, max_body: usize) -> std::io::Result<FrameRead> {
        let position = self.buf_pos;
        if !self.fill(FRAME_HEADER)? {
            return Ok(if self.buf.is_empty() {
                FrameRead::End
            } else {
                FrameRead::Bad {
                    position,
                    reason: format!("file ends {} bytes into a frame header", self.buf.len()),
                }
            });
        }
        let header = parse_frame_header(&self.buf[..FRAME_HEADER]);
        if header.body_len < MIN_BODY || header.body_len > max_body {
            return Ok(FrameRead::Bad {
                position,
                reason: format!("implausible record length {}", header.body_len),
            });
        }
        let total = FRAME_HEADER + header.body_len;
        if !self.fill(total)? {
            return Ok(FrameRead::Bad {
                position,
                reason: format!(
                    "file ends {} bytes into a {total}-byte record",
                    self.buf.len()
                ),
            });
        }
        let actual = crc32c::crc32c(&self.buf[FRAME_HEADER..total]);
        if actual != header.crc {
            return Ok(FrameRead::Bad {
                position,
                reason: format!(
                    "checksum mismatch (stored {:08x}, computed {actual:08x})",
                    header.crc
                ),
            });
        }
        let mut frame = self.buf.split_to(total);
        self.buf_pos += total as u64;
        let body = frame.split_off(FRAME_HEADER).freeze();
        Ok(FrameRead::Frame { position, body })
    }

    /// The offset stored in the next frame, without checking or consuming it; `None` at the
    /// end of the file or before a frame too short to hold one.
    pub fn peek_offset(&mut self) -> std::io::Result<Option<u64>> {
        if !self.fill(FRAME_HEADER + 9)? {
            return Ok(None);
        }
        let mut offset = [0u8; 8];
        offset.copy_from_slice(&self.buf[FRAME_HEADER + 1..FRAME_HEADER + 9]);
        Ok(Some(u64::from_le_bytes(offset)))
    }

    /// Consumes the next frame without checking its checksum; returns false (consuming
    /// nothing) when its length is implausible or the file ends inside it.
    pub fn skip_frame(&mut self, max_body: usize) -> std::io::Result<bool> {
        if !self.fill(FRAME_HEADER)? {
            return Ok(false);
        }
        let body_len = parse_frame_header(&self.buf[..FRAME_HEADER]).body_len;
        if !(MIN_BODY..=max_body).contains(&body_len) {
            return Ok(false);
        }
        let total = FRAME_HEADER + body_len;
        if self.fill(total)? {
            let _ = self.buf.split_to(total);
            self.buf_pos += total as u64;
            return Ok(true);
        }
        Ok(false)
    }
}

/// The outcome of scanning a segment's frames from its start.
#[derive(Debug)]
pub(crate) struct ScanOutcome {
    /// Bytes of valid, dense frames from the start of the file.
    pub valid_len: u64,
    /// Offset after the last valid record.
    pub next: u64,
    /// Timestamp of the last valid record (0 when none).
    pub max_ts: Micros,
    /// Index entries for the valid records.
    pub index: IndexBuilder,
    /// Where and why the scan stopped before the end of the file, if it did.
    pub stopped: Option<(u64, String)>,
}

/// Scans a whole segment, checking checksums and that offsets are dense from `base`.
pub(crate) fn scan_segment(
    path: &Path,
    base: u64,
    index_interval: u32,
    max_body: usize,
) -> Result<ScanOutcome> {
    let mut reader = FrameReader::open(path, 0, 1 << 20)
        .map_err(|e| LogError::io(format!("opening {}", path.display()), e))?;
    let mut outcome = ScanOutcome {
        valid_len: 0,
        next: base,
        max_ts: 0,
        index: IndexBuilder::new(index_interval),
        stopped: None,
    };
    loop {
        let read = reader
            .next_frame(max_body)
            .map_err(|e| LogError::io(format!("reading {}", path.display()), e))?;
        match read {
            FrameRead::End => break,
            FrameRead::Bad { position, reason } => {
                outcome.stopped = Some((position, reason));
                break;
            }
            FrameRead::Frame { position, body } => {
                let Some((offset, timestamp)) = peek_offset_timestamp(&body) else {
                    outcome.stopped = Some((position, "malformed record body".into()));
                    break;
                };
                if offset != outcome.next {
                    outcome.stopped = Some((
                        position,
                        format!("offset {offset} where {} was expected", outcome.next),
                    ));
                    break;
                }
                let frame_len = FRAME_HEADER + body.len();
                outcome.index.on_record(
                    (offset - base) as u32,
                    position as u32,
                    timestamp,
                    frame_len,
                );
                outcome.next = offset + 1;
                outcome.max_ts = outcome.max_ts.max(timestamp);
                outcome.valid_len = position + frame_len as u64;
            }
        }
    }
    Ok(outcome)
}

/// Scans from `position` (a known frame start holding `expected`) to the end of the file,
/// returning `(next offset, newest timestamp)` if every frame is valid and dense.
pub(crate) fn scan_tail(
    path: &Path,
    position: u64,
    expected: u64,
    max_body: usize,
) -> Result<Option<(u64, Micros)>> {
    let mut reader = FrameReader::open(path, position, 64 << 10)
        .map_err(|e| LogError::io(format!("opening {}", path.display()), e))?;
    let mut next = expected;
    let mut max_ts = 0;
    loop {
        match reader
            .next_frame(max_body)
            .map_err(|e| LogError::io(format!("reading {}", path.display()), e))?
        {
            FrameRead::End => return Ok(Some((next, max_ts))),
            FrameRead::Bad { .. } => return Ok(None),
            FrameRead::Frame { body, .. } => match peek_offset_timestamp(&body) {
                Some((offset, ts)) if offset == next => {
                    next += 1;
                    max_ts = max_ts.max(ts);
                }
                _ => return Ok(None),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip() {
        let path = segment_path(Path::new("/p"), 42, LOG_EXT);
        let name = path.file_name().unwrap().to_str().unwrap();
        assert_eq!(name, "00000000000000000042.log");
        assert_eq!(parse_segment_name(name), Some((42, "log")));
        assert_eq!(parse_segment_name("42.log"), None);
        assert_eq!(parse_segment_name("00000000000000000042.tmp"), None);
        assert_eq!(parse_segment_name(".lock"), None);
    }

    #[test]
    fn malformed_indexes_are_rejected() {
        let mut good = Vec::new();
        good.extend_from_slice(&3u32.to_le_bytes());
        good.extend_from_slice(&100u32.to_le_bytes());
        assert_eq!(parse_offset_index(&good, 200, 10), Some(vec![(3, 100)]));
        assert_eq!(parse_offset_index(&good[..5], 200, 10), None);
        assert_eq!(parse_offset_index(&good, 50, 10), None, "position past end");
        assert_eq!(parse_offset_index(&good, 200, 2), None, "offset past end");
        let mut unordered = good.clone();
        unordered.extend_from_slice(&good);
        assert_eq!(parse_offset_index(&unordered, 200, 10), None);
    }
}
