//! How Runnel's names become JetStream names.
//!
//! JetStream is strict about names: stream and bucket names allow `[A-Za-z0-9_-]`, subjects are
//! `.`-separated tokens, and a key-value key is part of a subject. The trait allows any
//! non-empty bucket, key and group name, so everything the runtime passes in goes through the
//! escapes here, which are injective (two different names never share an encoding) and keep
//! the common case readable (`billing/orders/0` is the subject tail `billing.orders.0`).
//!
//! | Runnel | JetStream |
//! | --- | --- |
//! | partition `p` of stream `s` | stream `<ns>_<s>_<p>`, subject `<ns>.<s>.<p>` |
//! | stream definitions | KV bucket `<ns>_streams`, key `<s>` |
//! | committed offsets | KV bucket `<ns>_offsets`, key `<group>.<s>.<p>` (each part escaped) |
//! | key-value bucket `b` | KV bucket `<ns>_kv_<b escaped>` |
//! | key `a/b/c` | subject tail `a.b.c` (each `/`-separated segment escaped) |
//!
//! A namespace is `[A-Za-z][A-Za-z0-9-]{0,31}`: no `_`, so `<ns>_` prefixes of two namespaces
//! never overlap and one namespace's streams can be listed (and dropped) by prefix.

use runnel_backend::{BackendError, Partition, StreamName};

/// The longest bucket name (after escaping) accepted, leaving room under the 255-byte limit
/// of a stream directory name on disk.
const MAX_BUCKET_NAME: usize = 200;

/// Checks a namespace: 1–32 characters, a letter first, then letters, digits and `-`.
pub fn validate_namespace(namespace: &str) -> Result<(), BackendError> {
    let ok = !namespace.is_empty()
        && namespace.len() <= 32
        && namespace.as_bytes()[0].is_ascii_alphabetic()
        && namespace
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(BackendError::Invalid(format!(
            "namespace `{namespace}` must be 1 to 32 characters of A-Z, a-z, 0-9 and `-`, starting with a letter"
        )))
    }
}

/// The names of one namespace.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    namespace: String,
}

impl Names {
    pub fn new(namespace: &str) -> Result<Self, BackendError> {
        validate_namespace(namespace)?;
        Ok(Self {
            namespace: namespace.to_string(),
        })
    }

    /// The JetStream stream holding one partition.
    pub fn partition_stream(&self, stream: &StreamName, partition: Partition) -> String {
        format!("{}_{stream}_{partition}", self.namespace)
    }

    /// The subject a partition's records are published on.
    pub fn partition_subject(&self, stream: &StreamName, partition: Partition) -> String {
        format!("{}.{stream}.{partition}", self.namespace)
    }

    /// The KV bucket of stream definitions.
    pub fn streams_bucket(&self) -> String {
        format!("{}_streams", self.namespace)
    }

    /// The KV bucket of committed group offsets.
    pub fn offsets_bucket(&self) -> String {
        format!("{}_offsets", self.namespace)
    }

    /// The KV bucket behind a bucket of the trait's key-value store.
    pub fn kv_bucket(&self, bucket: &str) -> Result<String, BackendError> {
        if bucket.is_empty() {
            return Err(BackendError::Invalid("bucket name is empty".into()));
        }
        let mut name = format!("{}_kv_", self.namespace);
        for b in bucket.bytes() {
            if b.is_ascii_alphanumeric() || b == b'_' {
                name.push(b as char);
            } else {
                push_hex(&mut name, '-', b);
            }
        }
        if name.len() > MAX_BUCKET_NAME {
            return Err(BackendError::Invalid(format!(
                "bucket name `{bucket}` is too long for JetStream once escaped ({} bytes, at most {MAX_BUCKET_NAME})",
                name.len()
            )));
        }
        Ok(name)
    }

    /// The prefix shared by every JetStream stream of this namespace (partitions; KV buckets
    /// are `KV_` followed by it).
    pub fn stream_prefix(&self) -> String {
        format!("{}_", self.namespace)
    }
}

/// The JetStream stream behind a KV bucket.
pub(crate) fn kv_stream(bucket: &str) -> String {
    format!("KV_{bucket}")
}

/// The subject of a key (already encoded) in a KV bucket.
pub(crate) fn kv_subject(bucket: &str, encoded_key: &str) -> String {
    format!("$KV.{bucket}.{encoded_key}")
}

/// The key of a committed offset: group, stream and partition, each a subject token.
pub(crate) fn offset_key(group: &str, stream: &StreamName, partition: Partition) -> String {
    let mut key = String::new();
    encode_segment(&mut key, group);
    key.push('.');
    encode_segment(&mut key, stream.as_str());
    key.push('.');
    key.push_str(&partition.to_string());
    key
}

/// The committed-offset keys of `group` on every stream, as a subject filter of the
/// offsets bucket.
pub(crate) fn offsets_of_group(group: &str) -> String {
    let mut filter = String::new();
    encode_segment(&mut filter, group);
    filter.push_str(".>");
    filter
}

/// Every group's committed-offset keys on `stream`, as a subject filter of the offsets
/// bucket.
pub(crate) fn offsets_on_stream(stream: &StreamName) -> String {
    let mut filter = String::from("*.");
    encode_segment(&mut filter, stream.as_str());
    filter.push_str(".*");
    filter
}

fn push_hex(out: &mut String, marker: char, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push(marker);
    out.push(HEX[(byte >> 4) as usize] as char);
    out.push(HEX[(byte & 0xf) as usize] as char);
}

/// Escapes one `/`-separated segment of a key into one subject token: `[A-Za-z0-9_-]` as
/// they are, every other byte as `=XX` (hex), and the empty segment as a lone `=`.
fn encode_segment(out: &mut String, segment: &str) {
    if segment.is_empty() {
        out.push('=');
        return;
    }
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            push_hex(out, '=', b);
        }
    }
}

/// Encodes a key of the trait's key-value store as a KV key: segments become tokens.
pub(crate) fn encode_key(key: &str) -> Result<String, BackendError> {
    if key.is_empty() {
        return Err(BackendError::Invalid("key is empty".into()));
    }
    let mut out = String::with_capacity(key.len() + 8);
    for (i, segment) in key.split('/').enumerate() {
        if i > 0 {
            out.push('.');
        }
        encode_segment(&mut out, segment);
    }
    Ok(out)
}

/// Decodes a KV key written by [`encode_key`]; `None` if it is not one.
pub(crate) fn decode_key(encoded: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(encoded.len());
    for (i, token) in encoded.split('.').enumerate() {
        if i > 0 {
            bytes.push(b'/');
        }
        if token == "=" {
            continue;
        }
        let raw = token.as_bytes();
        let mut at = 0;
        while at < raw.len() {
            if raw[at] == b'=' {
                let hex = token.get(at + 1..at + 3)?;
                bytes.push(u8::from_str_radix(hex, 16).ok()?);
                at += 3;
            } else {
                bytes.push(raw[at]);
                at += 1;
            }
        }
        if raw.is_empty() {
            return None;
        }
    }
    String::from_utf8(bytes).ok()
}

/// The narrowest subject filter that holds every key starting with `prefix`: the segments
/// of the prefix that are complete (followed by a `/`) become literal tokens. The caller
/// still checks each key against the prefix.
pub(crate) fn prefix_filter(bucket: &str, prefix: &str) -> String {
    let segments: Vec<&str> = prefix.split('/').collect();
    let complete = &segments[..segments.len() - 1];
    let mut filter = format!("$KV.{bucket}.");
    for segment in complete {
        encode_segment(&mut filter, segment);
        filter.push('.');
    }
    filter.push('>');
    filter
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_their_encoding_and_stay_readable() {
        for key in [
            "billing/orders/0",
            "order.placed/versions/0000000001",
            "a//b",
            "/",
            "x/",
            "/x",
            "=",
            "==41",
            "*>",
            "ünïcode/key",
            "with space",
        ] {
            let encoded = encode_key(key).unwrap();
            assert!(
                encoded
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-=.".contains(&b)),
                "{encoded}"
            );
            assert!(!encoded.starts_with('.') && !encoded.ends_with('.'));
            assert!(!encoded.contains(".."), "{encoded}");
            assert_eq!(decode_key(&encoded).as_deref(), Some(key), "{encoded}");
        }
        assert_eq!(encode_key("billing/orders/0").unwrap(), "billing.orders.0");
        assert!(encode_key("").is_err());
    }

    #[test]
    fn different_keys_never_share_an_encoding() {
        let keys = ["a", "a/", "a=", "a=3D", "a.b", "a/b", "a=2Eb", "=", "/", ""];
        let encoded: Vec<_> = keys.iter().filter_map(|k| encode_key(k).ok()).collect();
        let mut unique = encoded.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), encoded.len(), "{encoded:?}");
    }

    #[test]
    fn prefix_filters_use_complete_segments_only() {
        assert_eq!(prefix_filter("b", ""), "$KV.b.>");
        assert_eq!(prefix_filter("b", "order"), "$KV.b.>");
        assert_eq!(prefix_filter("b", "order/"), "$KV.b.order.>");
        assert_eq!(prefix_filter("b", "g/s/1/"), "$KV.b.g.s.1.>");
        assert_eq!(prefix_filter("b", "g/s/1"), "$KV.b.g.s.>");
    }

    #[test]
    fn bucket_names_are_escaped_injectively() {
        let names = Names::new("runnel").unwrap();
        assert_eq!(
            names.kv_bucket("runnel_leases").unwrap(),
            "runnel_kv_runnel_leases"
        );
        assert_eq!(names.kv_bucket("a-b").unwrap(), "runnel_kv_a-2Db");
        assert_eq!(names.kv_bucket("a.b").unwrap(), "runnel_kv_a-2Eb");
        assert!(names.kv_bucket("").is_err());
        assert!(names.kv_bucket(&"x".repeat(300)).is_err());
    }

    #[test]
    fn namespaces_refuse_underscores_and_separators() {
        for ok in ["runnel", "t1a2b", "prod-eu"] {
            assert!(validate_namespace(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a_b", "a.b", "1abc", "a>", &"a".repeat(33)] {
            assert!(validate_namespace(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn partition_names_follow_the_documented_layout() {
        let names = Names::new("runnel").unwrap();
        let s = StreamName::new("order").unwrap();
        assert_eq!(names.partition_stream(&s, 3), "runnel_order_3");
        assert_eq!(names.partition_subject(&s, 3), "runnel.order.3");
        assert_eq!(
            offset_key("billing", &s, 2),
            "billing.order.2",
            "readable when nothing needs escaping"
        );
    }
}
