//! Records and their on-disk frame.
//!
//! ```text
//! frame  = body_len:u32le  crc32c(body):u32le  body
//! body   = version:u8(=1)  offset:u64le  timestamp_us:u64le
//!          key_len:u32le key  value_len:u32le value
//!          header_count:u16le { name_len:u16le name  value_len:u32le value }*
//! ```
//! The full layout, with a byte diagram, is in `docs/log-format.md`.

use bytes::{BufMut, Bytes};
use runnel_clock::Micros;
pub use runnel_record::{Header, Record, StoredRecord};

/// Current frame body version.
pub const FRAME_VERSION: u8 = 1;
/// Length and checksum in front of every body.
pub const FRAME_HEADER: usize = 8;
/// Smallest possible body: version, offset, timestamp, two empty lengths, zero headers.
pub const MIN_BODY: usize = 1 + 8 + 8 + 4 + 4 + 2;
/// Framing bytes of a record with empty key, value and no headers.
pub const FRAME_OVERHEAD: usize = FRAME_HEADER + MIN_BODY;

/// The size of `record`'s frame on disk.
pub fn frame_len(record: &Record) -> usize {
    FRAME_OVERHEAD
        + record.key.len()
        + record.value.len()
        + record
            .headers
            .iter()
            .map(|h| 2 + 4 + h.name.len() + h.value.len())
            .sum::<usize>()
}

/// Appends the frame of `record` to `out`. The caller has checked the size limits
/// (`u16`/`u32` lengths hold because `max_record_bytes` fits in `u32` and header names are
/// checked by [`check_record`]).
pub(crate) fn encode_frame(out: &mut Vec<u8>, offset: u64, timestamp: Micros, record: &Record) {
    let start = out.len();
    let body_len = frame_len(record) - FRAME_HEADER;
    out.reserve(FRAME_HEADER + body_len);
    out.put_u32_le(body_len as u32);
    out.put_u32_le(0); // checksum, patched below
    out.put_u8(FRAME_VERSION);
    out.put_u64_le(offset);
    out.put_u64_le(timestamp);
    out.put_u32_le(record.key.len() as u32);
    out.put_slice(&record.key);
    out.put_u32_le(record.value.len() as u32);
    out.put_slice(&record.value);
    out.put_u16_le(record.headers.len() as u16);
    for header in &record.headers {
        out.put_u16_le(header.name.len() as u16);
        out.put_slice(&header.name);
        out.put_u32_le(header.value.len() as u32);
        out.put_slice(&header.value);
    }
    let crc = crc32c::crc32c(&out[start + FRAME_HEADER..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Why a record cannot be appended, before anything is written.
pub(crate) enum RecordCheck {
    TooLarge(usize),
    TooManyHeaders,
    HeaderNameTooLong,
}

pub(crate) fn check_record(record: &Record, limit: usize) -> Result<(), RecordCheck> {
    let len = frame_len(record);
    if len > limit {
        return Err(RecordCheck::TooLarge(len));
    }
    if record.headers.len() > u16::MAX as usize {
        return Err(RecordCheck::TooManyHeaders);
    }
    if record
        .headers
        .iter()
        .any(|h| h.name.len() > u16::MAX as usize)
    {
        return Err(RecordCheck::HeaderNameTooLong);
    }
    Ok(())
}

/// The two fields in front of a body.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FrameHeader {
    pub body_len: usize,
    pub crc: u32,
}

pub(crate) fn parse_frame_header(bytes: &[u8]) -> FrameHeader {
    let body_len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    let crc = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    FrameHeader { body_len, crc }
}

/// Decodes a body whose checksum has been verified. Any inconsistency is reported as a string
/// the caller turns into a [`crate::LogError::Corrupt`].
pub(crate) fn decode_body(body: Bytes) -> Result<StoredRecord, String> {
    let mut cursor = Cursor {
        bytes: &body,
        at: 0,
    };
    let version = cursor.u8()?;
    if version != FRAME_VERSION {
        return Err(format!("unknown frame version {version}"));
    }
    let offset = cursor.u64()?;
    let timestamp = cursor.u64()?;
    let key_len = cursor.u32()? as usize;
    let key = cursor.slice(&body, key_len)?;
    let value_len = cursor.u32()? as usize;
    let value = cursor.slice(&body, value_len)?;
    let header_count = cursor.u16()? as usize;
    let mut headers = Vec::with_capacity(header_count.min(64));
    for _ in 0..header_count {
        let name_len = cursor.u16()? as usize;
        let name = cursor.slice(&body, name_len)?;
        let value_len = cursor.u32()? as usize;
        let value = cursor.slice(&body, value_len)?;
        headers.push(Header { name, value });
    }
    if cursor.at != body.len() {
        return Err(format!(
            "{} trailing bytes after the record",
            body.len() - cursor.at
        ));
    }
    Ok(StoredRecord {
        offset,
        timestamp,
        key,
        value,
        headers,
    })
}

/// Reads only the offset and timestamp of a verified body.
pub(crate) fn peek_offset_timestamp(body: &[u8]) -> Option<(u64, Micros)> {
    if body.len() < MIN_BODY || body[0] != FRAME_VERSION {
        return None;
    }
    let offset = u64::from_le_bytes(body[1..9].try_into().ok()?);
    let timestamp = u64::from_le_bytes(body[9..17].try_into().ok()?);
    Some((offset, timestamp))
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| format!("field of {n} bytes runs past the end of the record"))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, String> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn slice(&mut self, whole: &Bytes, n: usize) -> Result<Bytes, String> {
        let start = self.at;
        self.take(n)?;
        Ok(whole.slice(start..start + n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trips_and_checksum_covers_body() {
        let record = Record::new("user-1", "hello").with_header("h", "v");
        let mut out = Vec::new();
        encode_frame(&mut out, 42, 7, &record);
        assert_eq!(out.len(), frame_len(&record));
        let header = parse_frame_header(&out);
        assert_eq!(header.body_len, out.len() - FRAME_HEADER);
        assert_eq!(header.crc, crc32c::crc32c(&out[FRAME_HEADER..]));
        let stored = decode_body(Bytes::copy_from_slice(&out[FRAME_HEADER..])).unwrap();
        assert_eq!(stored.offset, 42);
        assert_eq!(stored.timestamp, 7);
        assert_eq!(stored.key, record.key);
        assert_eq!(stored.value, record.value);
        assert_eq!(stored.headers, record.headers);
    }

    #[test]
    fn truncated_body_is_an_error_not_a_panic() {
        let mut out = Vec::new();
        encode_frame(&mut out, 1, 1, &Record::new("k", "value"));
        for cut in FRAME_HEADER..out.len() {
            assert!(decode_body(Bytes::copy_from_slice(&out[FRAME_HEADER..cut])).is_err());
        }
    }
}
