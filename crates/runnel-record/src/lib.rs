//! The record every storage layer of Runnel appends and reads: an opaque key, value and
//! headers, and, once stored, its offset and append time.
//!
//! It lives in its own crate so that the backend trait, the JetStream backend, the runtime and
//! the server can name records without compiling the segmented log (`runnel-log`), which is
//! only one way of storing them. How a record is framed on disk is the log's business
//! (`runnel_log::frame_len`); how it is framed in a JetStream message is that backend's.

use bytes::Bytes;
use runnel_clock::Micros;

/// One header of a record: an opaque name and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: Bytes,
    pub value: Bytes,
}

impl Header {
    pub fn new(name: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// A record to append. The storage assigns its offset and timestamp.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    pub key: Bytes,
    pub value: Bytes,
    pub headers: Vec<Header>,
}

impl Record {
    /// A record with a key and value and no headers.
    pub fn new(key: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
            headers: Vec::new(),
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        self.headers.push(Header::new(name, value));
        self
    }
}

/// A record read back from storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// Position of the record in its partition: dense, starting at 0.
    pub offset: u64,
    /// When the storage appended it, in microseconds since the epoch (never decreasing).
    pub timestamp: Micros,
    pub key: Bytes,
    pub value: Bytes,
    pub headers: Vec<Header>,
}
