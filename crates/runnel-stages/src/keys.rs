//! Window keys, interned: each distinct key string is stored once and named by a small id.
//!
//! A sliding window keeps a row per key in each of its panes; carrying the key string in every
//! row would cost a copy and a string hash per pane. Rows carry a [`KeyId`] instead, and the
//! table counts how many rows (or sessions) use each id, so a key's string is freed with its
//! last state and ids are reused.
//!
//! Finding a key is on every event's path, and with many keys each step is a cache miss, so
//! keys of up to 22 bytes are stored inline in their entry (no pointer to follow), and the
//! entry remembers the pane row its key last updated ([`Hint`]): the next event of the key,
//! usually for the same pane, finds its row without a lookup in the pane.

use hashbrown::{DefaultHashBuilder, HashTable};
use std::hash::BuildHasher;

/// The id of an interned key.
pub(crate) type KeyId = u32;

/// A key's text: inline when short, on the heap otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
enum KeyText {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<str>),
}

const INLINE: usize = 22;

impl Default for KeyText {
    fn default() -> Self {
        Self::Inline {
            len: 0,
            bytes: [0; INLINE],
        }
    }
}

impl KeyText {
    fn new(key: &str) -> Self {
        if key.len() <= INLINE {
            let mut bytes = [0; INLINE];
            bytes[..key.len()].copy_from_slice(key.as_bytes());
            Self::Inline {
                len: key.len() as u8,
                bytes,
            }
        } else {
            Self::Heap(key.into())
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Inline { len, bytes } => &bytes[..*len as usize],
            Self::Heap(key) => key.as_bytes(),
        }
    }

    fn as_str(&self) -> &str {
        // Built from a `&str`, so always UTF-8.
        std::str::from_utf8(self.as_bytes()).unwrap_or("")
    }

    fn is_empty(&self) -> bool {
        self.as_bytes().is_empty()
    }

    fn heap_bytes(&self) -> usize {
        match self {
            Self::Inline { .. } => 0,
            Self::Heap(key) => key.len(),
        }
    }
}

/// The pane row a key last updated: `(pane start, row)`. Only a hint — checked against the
/// row's key before use.
pub(crate) type Hint = Option<(i64, u32)>;

#[derive(Debug, Default)]
struct Entry {
    key: KeyText,
    refs: u32,
    hint: Hint,
}

/// Interned keys with use counts.
#[derive(Debug, Default)]
pub(crate) struct KeyTable {
    index: HashTable<KeyId>,
    entries: Vec<Entry>,
    free: Vec<KeyId>,
    hasher: DefaultHashBuilder,
}

impl KeyTable {
    /// The id of `key`, interning it (with no uses yet) if it is new. A caller that ends up
    /// not using a new id gives it back with [`KeyTable::forget_if_unused`].
    pub(crate) fn intern(&mut self, key: &str) -> KeyId {
        let hash = self.hasher.hash_one(key);
        let entries = &self.entries;
        if let Some(&id) = self.index.find(hash, |&id| {
            entries[id as usize].key.as_bytes() == key.as_bytes()
        }) {
            return id;
        }
        let entry = Entry {
            key: KeyText::new(key),
            refs: 0,
            hint: None,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.entries[id as usize] = entry;
                id
            }
            None => {
                self.entries.push(entry);
                (self.entries.len() - 1) as KeyId
            }
        };
        self.insert_index(id, hash);
        id
    }

    fn insert_index(&mut self, id: KeyId, hash: u64) {
        let (entries, hasher) = (&self.entries, &self.hasher);
        self.index.insert_unique(hash, id, |&other| {
            hasher.hash_one(entries[other as usize].key.as_str())
        });
    }

    /// The key of `id`.
    pub(crate) fn get(&self, id: KeyId) -> &str {
        self.entries.get(id as usize).map_or("", |e| e.key.as_str())
    }

    /// The row `id` last updated.
    pub(crate) fn hint(&self, id: KeyId) -> Hint {
        self.entries.get(id as usize).and_then(|e| e.hint)
    }

    /// Remembers the row `id` just updated.
    pub(crate) fn set_hint(&mut self, id: KeyId, hint: Hint) {
        if let Some(entry) = self.entries.get_mut(id as usize) {
            entry.hint = hint;
        }
    }

    /// Counts one more use of `id`.
    pub(crate) fn acquire(&mut self, id: KeyId) {
        if let Some(entry) = self.entries.get_mut(id as usize) {
            entry.refs += 1;
        }
    }

    /// Counts one use less of `id`, freeing it after its last.
    pub(crate) fn release(&mut self, id: KeyId) {
        if let Some(entry) = self.entries.get_mut(id as usize) {
            entry.refs = entry.refs.saturating_sub(1);
        }
        self.forget_if_unused(id);
    }

    /// Frees `id` if nothing uses it.
    pub(crate) fn forget_if_unused(&mut self, id: KeyId) {
        let Some(entry) = self.entries.get_mut(id as usize) else {
            return;
        };
        if entry.refs > 0 || entry.key.is_empty() {
            return;
        }
        let key = std::mem::take(&mut entry.key);
        entry.hint = None;
        let hash = self.hasher.hash_one(key.as_str());
        if let Ok(found) = self.index.find_entry(hash, |&other| other == id) {
            found.remove();
        }
        self.free.push(id);
    }

    /// Keys in use.
    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }

    /// Every key in use with its id, for a snapshot.
    pub(crate) fn live(&self) -> impl Iterator<Item = (KeyId, &str)> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| !e.key.is_empty())
            .map(|(id, e)| (id as KeyId, e.key.as_str()))
    }

    /// Ids free for reuse, next to be reused last (kept in snapshots so that a restored
    /// stage hands out the same ids as the original).
    pub(crate) fn free_list(&self) -> &[KeyId] {
        &self.free
    }

    /// A table holding `keys` under their ids with `free` as its free list, no uses counted
    /// yet; `None` unless ids and keys are unique, keys non-empty, and `free` names exactly
    /// the ids in between that hold no key.
    pub(crate) fn restore(keys: Vec<(KeyId, String)>, free: Vec<KeyId>) -> Option<Self> {
        let mut table = Self::default();
        let len = keys.len().checked_add(free.len())?;
        table.entries.resize_with(len, Entry::default);
        for (id, key) in keys {
            let slot = table.entries.get_mut(id as usize)?;
            if key.is_empty() || !slot.key.is_empty() {
                return None;
            }
            slot.key = KeyText::new(&key);
            let hash = table.hasher.hash_one(key.as_str());
            let entries = &table.entries;
            let key = &entries[id as usize].key;
            if table
                .index
                .find(hash, |&o| o != id && entries[o as usize].key == *key)
                .is_some()
            {
                return None;
            }
            table.insert_index(id, hash);
        }
        for &id in &free {
            let slot = table.entries.get_mut(id as usize)?;
            if !slot.key.is_empty() || slot.refs == u32::MAX {
                return None;
            }
            // Marks the id as listed, so a repeat is caught; cleared below.
            slot.refs = u32::MAX;
        }
        for entry in &mut table.entries {
            entry.refs = 0;
        }
        table.free = free;
        Some(table)
    }

    /// Whether some key has no use (after a restore: a key no state refers to).
    pub(crate) fn has_unused(&self) -> bool {
        self.entries
            .iter()
            .any(|e| !e.key.is_empty() && e.refs == 0)
    }

    /// Bytes held, approximately.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.index.capacity() * (std::mem::size_of::<KeyId>() + 1)
            + self.entries.capacity() * std::mem::size_of::<Entry>()
            + self
                .entries
                .iter()
                .map(|e| e.key.heap_bytes())
                .sum::<usize>()
            + self.free.capacity() * std::mem::size_of::<KeyId>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_freed_with_its_last_use_and_its_id_reused() {
        let mut keys = KeyTable::default();
        let a = keys.intern("card-a");
        keys.acquire(a);
        keys.acquire(a);
        assert_eq!(keys.intern("card-a"), a);
        let b = keys.intern("card-b");
        keys.forget_if_unused(b);
        assert_eq!(keys.len(), 1, "an id never used is given back");
        keys.release(a);
        assert_eq!(keys.get(a), "card-a");
        keys.release(a);
        assert_eq!(keys.len(), 0);
        let long = "a key longer than twenty-two bytes";
        let l = keys.intern(long);
        assert_eq!(keys.get(l), long);
        keys.forget_if_unused(l);
        let c = keys.intern("card-c");
        assert!(c == a || c == b, "ids are reused");
        assert_eq!(keys.get(c), "card-c");
    }
}
