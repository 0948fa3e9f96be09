//! The bytes a JetStream message carries for Runnel.
//!
//! NATS headers are text: names are tokens, values cannot hold CR or LF, and neither may be
//! arbitrary bytes. A Runnel record's headers can be any bytes (the conformance suite sends
//! `0xff 0xfe` as a header name), so a record's key, headers, value and append timestamp all
//! travel in the message payload, in this frame (integers little-endian):
//!
//! ```text
//! record payload
//! ┌─────────┬──────────────┬─────────┬─────┬───────────┬──────────────────────────┬───────┐
//! │ version │ timestamp µs │ key len │ key │ n headers │ n × (name len, name,     │ value │
//! │ u8 = 1  │ u64          │ u32     │     │ u32       │      value len, value)   │ (rest)│
//! └─────────┴──────────────┴─────────┴─────┴───────────┴──────────────────────────┴───────┘
//!   lengths are u32
//!
//! key-value entry payload
//! ┌─────────┬───────────────────┬──────────────────────────┬───────┐
//! │ version │ flags             │ expires_at µs (u64),     │ value │
//! │ u8 = 1  │ u8, bit 0: expiry │ present iff bit 0 is set │ (rest)│
//! └─────────┴───────────────────┴──────────────────────────┴───────┘
//! ```
//!
//! The timestamp is stamped by the backend from its injected clock, not taken from
//! JetStream's own message time, so append times mean the same as on the embedded backend
//! (and a manual clock in tests moves them).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use runnel_backend::{Header, Record, StoredRecord};
use runnel_clock::Micros;

const VERSION: u8 = 1;
const EXPIRES: u8 = 1;

/// The key, header and value bytes of a record: what a read counts against its `max_bytes`.
pub(crate) fn content_len(key: &[u8], value: &[u8], headers: &[Header]) -> usize {
    key.len()
        + value.len()
        + headers
            .iter()
            .map(|h| h.name.len() + h.value.len())
            .sum::<usize>()
}

/// The size of a record's payload frame.
pub(crate) fn encoded_len(record: &Record) -> usize {
    1 + 8
        + 4
        + 4
        + 8 * record.headers.len()
        + content_len(&record.key, &record.value, &record.headers)
}

/// The payload of one record.
pub(crate) fn encode_record(record: &Record, timestamp: Micros) -> Bytes {
    let mut out = BytesMut::with_capacity(encoded_len(record));
    out.put_u8(VERSION);
    out.put_u64_le(timestamp);
    out.put_u32_le(record.key.len() as u32);
    out.put_slice(&record.key);
    out.put_u32_le(record.headers.len() as u32);
    for header in &record.headers {
        out.put_u32_le(header.name.len() as u32);
        out.put_slice(&header.name);
        out.put_u32_le(header.value.len() as u32);
        out.put_slice(&header.value);
    }
    out.put_slice(&record.value);
    out.freeze()
}

/// Why a payload is not a frame this version reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FrameError(pub &'static str);

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

fn take(payload: &mut Bytes, len: usize, what: &'static str) -> Result<Bytes, FrameError> {
    if payload.remaining() < len {
        return Err(FrameError(what));
    }
    Ok(payload.split_to(len))
}

fn take_u32(payload: &mut Bytes, what: &'static str) -> Result<usize, FrameError> {
    if payload.remaining() < 4 {
        return Err(FrameError(what));
    }
    Ok(payload.get_u32_le() as usize)
}

fn check_version(payload: &mut Bytes) -> Result<(), FrameError> {
    if payload.remaining() < 1 {
        return Err(FrameError("empty payload"));
    }
    match payload.get_u8() {
        VERSION => Ok(()),
        _ => Err(FrameError("unknown frame version")),
    }
}

/// Only the timestamp of a record payload (for searches by time).
pub(crate) fn record_timestamp(payload: &[u8]) -> Result<Micros, FrameError> {
    match payload {
        [VERSION, rest @ ..] if rest.len() >= 8 => {
            let mut ts = [0u8; 8];
            ts.copy_from_slice(&rest[..8]);
            Ok(u64::from_le_bytes(ts))
        }
        [VERSION, ..] => Err(FrameError("truncated timestamp")),
        [] => Err(FrameError("empty payload")),
        _ => Err(FrameError("unknown frame version")),
    }
}

/// A record from its payload and its offset.
pub(crate) fn decode_record(mut payload: Bytes, offset: u64) -> Result<StoredRecord, FrameError> {
    check_version(&mut payload)?;
    if payload.remaining() < 8 {
        return Err(FrameError("truncated timestamp"));
    }
    let timestamp = payload.get_u64_le();
    let key_len = take_u32(&mut payload, "truncated key length")?;
    let key = take(&mut payload, key_len, "truncated key")?;
    let count = take_u32(&mut payload, "truncated header count")?;
    // Each header needs at least 8 bytes: a count beyond that is corrupt, not an allocation.
    if count > payload.remaining() / 8 {
        return Err(FrameError("header count exceeds the payload"));
    }
    let mut headers = Vec::with_capacity(count);
    for _ in 0..count {
        let name_len = take_u32(&mut payload, "truncated header name length")?;
        let name = take(&mut payload, name_len, "truncated header name")?;
        let value_len = take_u32(&mut payload, "truncated header value length")?;
        let value = take(&mut payload, value_len, "truncated header value")?;
        headers.push(Header { name, value });
    }
    Ok(StoredRecord {
        offset,
        timestamp,
        key,
        value: payload,
        headers,
    })
}

/// The payload of a key-value entry.
pub(crate) fn encode_entry(value: &[u8], expires_at: Option<Micros>) -> Bytes {
    let mut out = BytesMut::with_capacity(10 + value.len());
    out.put_u8(VERSION);
    match expires_at {
        Some(at) => {
            out.put_u8(EXPIRES);
            out.put_u64_le(at);
        }
        None => out.put_u8(0),
    }
    out.put_slice(value);
    out.freeze()
}

/// A key-value entry's value and expiry from its payload.
pub(crate) fn decode_entry(mut payload: Bytes) -> Result<(Bytes, Option<Micros>), FrameError> {
    check_version(&mut payload)?;
    if payload.remaining() < 1 {
        return Err(FrameError("truncated flags"));
    }
    let flags = payload.get_u8();
    let expires_at = if flags & EXPIRES != 0 {
        if payload.remaining() < 8 {
            return Err(FrameError("truncated expiry"));
        }
        Some(payload.get_u64_le())
    } else {
        None
    };
    Ok((payload, expires_at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_with_binary_headers() {
        let every_byte: Bytes = (0..=255u8).collect::<Vec<u8>>().into();
        let record = Record {
            key: every_byte.clone(),
            value: Bytes::from_static(b"\xc3\x28"),
            headers: vec![
                Header::new(Bytes::from_static(&[0xff, 0xfe]), every_byte.clone()),
                Header::new("dup", "1"),
                Header::new("dup", ""),
            ],
        };
        let payload = encode_record(&record, 42);
        assert_eq!(record_timestamp(&payload), Ok(42));
        let stored = decode_record(payload, 7).unwrap();
        assert_eq!(
            (
                stored.offset,
                stored.timestamp,
                stored.key,
                stored.value,
                stored.headers
            ),
            (7, 42, record.key, record.value, record.headers)
        );
        let empty = decode_record(encode_record(&Record::default(), 1), 0).unwrap();
        assert!(empty.key.is_empty() && empty.value.is_empty() && empty.headers.is_empty());
    }

    #[test]
    fn truncated_or_foreign_payloads_are_errors_not_panics() {
        let payload = encode_record(&Record::new("key", "value").with_header("h", "v"), 1);
        for cut in 0..payload.len() - "value".len() {
            assert!(
                decode_record(payload.slice(..cut), 0).is_err(),
                "cut at {cut}"
            );
        }
        assert!(decode_record(Bytes::from_static(b"plain text"), 0).is_err());
        let mut huge_count = BytesMut::new();
        huge_count.put_u8(VERSION);
        huge_count.put_u64_le(0);
        huge_count.put_u32_le(0);
        huge_count.put_u32_le(u32::MAX);
        assert!(decode_record(huge_count.freeze(), 0).is_err());
    }

    #[test]
    fn entries_carry_their_expiry() {
        let (value, expires) = decode_entry(encode_entry(b"v", Some(9))).unwrap();
        assert_eq!((value, expires), (Bytes::from_static(b"v"), Some(9)));
        let (value, expires) = decode_entry(encode_entry(b"", None)).unwrap();
        assert_eq!((value, expires), (Bytes::new(), None));
        assert!(decode_entry(Bytes::from_static(&[VERSION, EXPIRES, 1])).is_err());
    }
}
