//! Publish-side deduplication: a bounded window of recently published event ids per stream.
//!
//! The log is the source of truth: every record carries its event id in a header, so after a
//! restart the window is rebuilt by reading the records appended within it. No extra write is
//! made per publish. Ids are kept as 128-bit hashes of source and id ([`identity_hash`], xxh3; the same
//! function names processed ids in the store, so it is not seeded); the tables only mix them with a per-process seed
//! instead of hashing them again. Memory per id: a 33-byte table
//! slot (key, position, control byte) at a load between 44 % and 88 % (the table doubles), plus
//! 24 bytes in the expiry queue (which also doubles): about 60–100 bytes, ≈ 95 MB at the
//! default capacity of 1,000,000 ids.

use std::collections::hash_map::Entry as Slot;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, OnceLock};

use runnel_backend::Partition;
use runnel_clock::Micros;
use tokio::sync::watch;

/// The outcome of a batch append, shared with publishes of the same ids that wait for it:
/// `Ok(base offsets per partition)` or the failure's message.
pub(crate) type BatchOutcome = Option<Result<(), String>>;

/// A reference to where an id was or will be appended.
#[derive(Debug, Clone)]
pub(crate) enum Seen {
    /// Appended at this position.
    Done { partition: Partition, offset: u64 },
    /// Being appended by another publish; wait on its outcome, then look again.
    Pending(watch::Receiver<BatchOutcome>),
}

/// 16 bytes: what an id's table slot holds beside its key.
#[derive(Debug)]
enum Entry {
    Done {
        partition: Partition,
        offset: u64,
    },
    /// Shared by every id of one publish (a receiver alone is 16 bytes).
    Pending(Arc<watch::Receiver<BatchOutcome>>),
}

/// A table keyed by id hashes: they are already spread, but `identity_hash` is a public function,
/// so a table mixes them with a per-process seed (ids chosen to share bucket bits would
/// otherwise pile up in one place).
pub(crate) type IdMap<V> = HashMap<u128, V, BuildHasherDefault<IdHasher>>;

/// The [`Hasher`] of [`IdMap`]: a seeded 64-bit finalizer over an id hash.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u128(&mut self, id: u128) {
        static SEED: OnceLock<u64> = OnceLock::new();
        let seed = *SEED.get_or_init(rand::random);
        // MurmurHash3's fmix64: every input bit reaches every output bit.
        let mut x = (id as u64) ^ ((id >> 64) as u64).rotate_left(32) ^ seed;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^= x >> 33;
        self.0 = x;
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u128` keys are hashed here; anything else still gets a fair spread.
        for byte in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(*byte)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
}

/// The remembered ids of one stream.
#[derive(Debug)]
pub(crate) struct DedupWindow {
    window: Micros,
    capacity: usize,
    ids: IdMap<Entry>,
    /// Completed ids in the order they were appended, with the time, for expiry. Each `Done`
    /// entry of `ids` has exactly one place here.
    order: VecDeque<(u128, Micros)>,
}

/// The stable 128-bit hash of an event's identity, its `source` and `id` together (CloudEvents
/// makes only the pair unique: two producers may both number their events from 1). It keys
/// the dedup window, names processed-id records, and is the record header JetStream
/// deduplicates on. The source's length goes first, so no (source, id) pair's bytes can be
/// read as another's.
pub(crate) fn identity_hash(source: &str, id: &str) -> u128 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(&(source.len() as u64).to_le_bytes());
    hasher.update(source.as_bytes());
    hasher.update(id.as_bytes());
    hasher.digest128()
}

/// The identity hash of an event.
pub(crate) fn event_identity(event: &runnel_envelope::Event) -> u128 {
    identity_hash(event.source().as_str(), event.id().as_str())
}

impl DedupWindow {
    pub fn new(window: Micros, capacity: usize) -> Self {
        Self {
            window,
            capacity: capacity.max(1),
            ids: IdMap::default(),
            order: VecDeque::new(),
        }
    }

    /// What is known of `id` at time `now`.
    pub fn lookup(&mut self, id: u128, now: Micros) -> Option<Seen> {
        self.expire(now);
        match self.ids.get(&id)? {
            Entry::Done { partition, offset } => Some(Seen::Done {
                partition: *partition,
                offset: *offset,
            }),
            Entry::Pending(outcome) => Some(Seen::Pending(outcome.as_ref().clone())),
        }
    }

    /// Marks `id` as being appended by a publish whose outcome `outcome` will carry.
    pub fn reserve(&mut self, id: u128, outcome: Arc<watch::Receiver<BatchOutcome>>) {
        self.ids.insert(id, Entry::Pending(outcome));
    }

    /// Records that `id` was appended at a position at time `at`.
    pub fn complete(&mut self, id: u128, partition: Partition, offset: u64, at: Micros) {
        let done = Entry::Done { partition, offset };
        match self.ids.entry(id) {
            // Already appended (a rebuild from a log that holds the id twice): the first
            // position stands, with its one place in the expiry queue.
            Slot::Occupied(slot) if matches!(slot.get(), Entry::Done { .. }) => return,
            Slot::Occupied(mut slot) => {
                slot.insert(done);
            }
            Slot::Vacant(slot) => {
                slot.insert(done);
            }
        }
        self.order.push_back((id, at));
        while self.order.len() > self.capacity {
            self.evict_oldest();
        }
    }

    /// Forgets a reservation whose append failed.
    pub fn release(&mut self, id: u128) {
        if matches!(self.ids.get(&id), Some(Entry::Pending(_))) {
            self.ids.remove(&id);
        }
    }

    /// Number of ids remembered.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    fn expire(&mut self, now: Micros) {
        while let Some((_, at)) = self.order.front() {
            if now.saturating_sub(*at) <= self.window {
                break;
            }
            self.evict_oldest();
        }
    }

    fn evict_oldest(&mut self) {
        if let Some((id, _)) = self.order.pop_front()
            && matches!(self.ids.get(&id), Some(Entry::Done { .. }))
        {
            self.ids.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_remembered_within_the_window_and_forgotten_after() {
        let mut window = DedupWindow::new(1_000, 10);
        window.complete(identity_hash("/s", "a"), 2, 7, 100);
        assert!(matches!(
            window.lookup(identity_hash("/s", "a"), 1_100),
            Some(Seen::Done {
                partition: 2,
                offset: 7
            })
        ));
        assert!(window.lookup(identity_hash("/s", "a"), 1_101).is_none());
        assert_eq!(window.len(), 0);
    }

    #[test]
    fn capacity_bounds_memory_by_forgetting_the_oldest() {
        let mut window = DedupWindow::new(u64::MAX, 3);
        for (i, id) in ["a", "b", "c", "d"].iter().enumerate() {
            window.complete(identity_hash("/s", id), 0, i as u64, i as u64);
        }
        assert_eq!(window.len(), 3);
        assert!(window.lookup(identity_hash("/s", "a"), 10).is_none());
        assert!(window.lookup(identity_hash("/s", "d"), 10).is_some());
    }

    #[test]
    fn an_id_completed_twice_keeps_its_first_position_and_one_expiry() {
        let mut window = DedupWindow::new(1_000, 10);
        window.complete(identity_hash("/s", "a"), 1, 5, 100);
        window.complete(identity_hash("/s", "a"), 2, 9, 500);
        assert!(matches!(
            window.lookup(identity_hash("/s", "a"), 600),
            Some(Seen::Done {
                partition: 1,
                offset: 5
            })
        ));
        assert_eq!(window.order.len(), 1);
        assert!(window.lookup(identity_hash("/s", "a"), 1_101).is_none());
    }

    #[test]
    fn slots_stay_small() {
        assert_eq!(std::mem::size_of::<(u128, Entry)>(), 32);
    }

    #[test]
    fn a_failed_reservation_is_released() {
        let mut window = DedupWindow::new(1_000, 10);
        let (_tx, rx) = watch::channel(None);
        window.reserve(identity_hash("/s", "a"), Arc::new(rx));
        assert!(matches!(
            window.lookup(identity_hash("/s", "a"), 0),
            Some(Seen::Pending(_))
        ));
        window.release(identity_hash("/s", "a"));
        assert!(window.lookup(identity_hash("/s", "a"), 0).is_none());
    }
}
