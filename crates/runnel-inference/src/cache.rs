//! The prediction cache: the last good prediction of each entity, the ladder's first step
//! down when the model cannot answer in time.
//!
//! Entries live for `ttl` on the injected clock (a fraud score of an hour ago says little);
//! the cache holds at most `capacity` entities, evicting the least recently written. It lives
//! in the stage's memory: it is rebuilt from the model's answers after a restart, and until
//! then the fallback rule answers (see docs/inference.md).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use runnel_clock::Micros;

/// A prediction served from the cache.
#[derive(Debug, Clone, PartialEq)]
pub struct Cached {
    /// The outputs the model gave.
    pub outputs: Vec<f64>,
    /// The model version that gave them.
    pub version: String,
    /// When (µs since the epoch).
    pub at: Micros,
}

#[derive(Debug, Default)]
struct Entries {
    /// Each entity's prediction and the number of the write that put it.
    map: HashMap<String, (Cached, u64)>,
    /// Keys in write order with the write's number; stale pairs are skipped when evicting.
    order: VecDeque<(String, u64)>,
    seq: u64,
}

/// Last good predictions by entity key.
#[derive(Debug)]
pub struct PredictionCache {
    ttl: u64,
    capacity: usize,
    entries: Mutex<Entries>,
}

impl PredictionCache {
    /// A cache keeping predictions for `ttl`, for at most `capacity` entities (0: no cache).
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl: u64::try_from(ttl.as_micros()).unwrap_or(u64::MAX),
            capacity,
            entries: Mutex::default(),
        }
    }

    /// Keeps `outputs` as `key`'s last good prediction.
    pub fn put(&self, key: &str, outputs: &[f64], version: &str, now: Micros) {
        if self.capacity == 0 || self.ttl == 0 {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.seq += 1;
        let seq = entries.seq;
        entries.map.insert(
            key.to_string(),
            (
                Cached {
                    outputs: outputs.to_vec(),
                    version: version.to_string(),
                    at: now,
                },
                seq,
            ),
        );
        entries.order.push_back((key.to_string(), seq));
        // Evict the least recently written while over capacity; pairs of the order queue that
        // a later write of the same key made stale are skipped, and dropped in bulk when they
        // pile up (so the queue stays below 2 × capacity + 16).
        while entries.map.len() > self.capacity {
            let Some((oldest, seq)) = entries.order.pop_front() else {
                break;
            };
            if entries.map.get(&oldest).is_some_and(|(_, s)| *s == seq) {
                entries.map.remove(&oldest);
            }
        }
        if entries.order.len() > 2 * self.capacity + 16 {
            let Entries { map, order, .. } = &mut *entries;
            order.retain(|(key, seq)| map.get(key).is_some_and(|(_, s)| s == seq));
        }
    }

    /// `key`'s last good prediction if it is younger than the TTL.
    pub fn get(&self, key: &str, now: Micros) -> Option<Cached> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .map
            .get(key)
            .filter(|(c, _)| now.saturating_sub(c.at) < self.ttl)
            .map(|(c, _)| c.clone())
    }

    /// Entities held (some may have expired).
    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map
            .len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prediction_is_served_until_its_ttl() {
        let cache = PredictionCache::new(Duration::from_secs(10), 100);
        cache.put("c1", &[0.9, 0.1], "v1", 1_000_000);
        assert_eq!(cache.get("c1", 10_999_999).unwrap().outputs, [0.9, 0.1]);
        assert_eq!(cache.get("c1", 11_000_000), None);
        assert_eq!(cache.get("c2", 1_000_000), None);
    }

    #[test]
    fn the_least_recently_written_is_evicted_at_capacity() {
        let cache = PredictionCache::new(Duration::from_secs(10), 2);
        cache.put("a", &[1.0], "v", 1);
        cache.put("b", &[2.0], "v", 2);
        cache.put("a", &[3.0], "v", 3);
        cache.put("c", &[4.0], "v", 4);
        assert_eq!(cache.get("b", 5), None, "b was written least recently");
        assert_eq!(cache.get("a", 5).unwrap().outputs, [3.0]);
        assert_eq!(cache.get("c", 5).unwrap().outputs, [4.0]);
        for n in 0..1000u64 {
            cache.put("a", &[n as f64], "v", 10 + n);
        }
        assert_eq!(cache.len(), 2);
        assert!(cache.entries.lock().unwrap().order.len() <= 2 * 2 + 16);
    }
}
