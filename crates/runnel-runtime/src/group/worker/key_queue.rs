//! The per-key queue: with `ordering = key`, events of one partition key wait in line and
//! only the one in front may be delivered, so a key's events run one at a time, in offset
//! order, while other keys' run alongside. An event waiting for a retry holds its line.
//!
//! A line is a head and a tail; its events are linked through the pending events themselves
//! (`PendingEvent::next_of_key`), so a key costs one map entry however many of its events
//! are pending.

use std::collections::hash_map::Entry;

use super::{State, Worker};
use crate::group::config::Ordering;

/// The pending events of one partition key: the one in front is the only one that may be
/// delivered.
pub(super) struct KeyLine {
    head: u64,
    tail: u64,
}

impl Worker {
    /// The line a record's partition key puts it in: its seeded hash under `ordering = key`
    /// (events with equal hashes share a line; a collision of two keys only orders them
    /// together), none otherwise.
    pub(super) fn line_of(&self, record_key: &[u8]) -> Option<u64> {
        match self.ctx.group.ordering {
            Ordering::Key if !record_key.is_empty() => Some(xxhash_rust::xxh3::xxh3_64_with_seed(
                record_key,
                self.key_seed,
            )),
            _ => None,
        }
    }

    /// Puts a newly admitted event at the back of its key's line; first in line, it is
    /// ready (or waits for its retry). Without a key it is first of its own line.
    pub(super) fn join_key_line(&mut self, offset: u64, key: Option<u64>) {
        let eligible = match key {
            Some(key) => match self.key_lines.entry(key) {
                Entry::Occupied(mut line) => {
                    let tail = std::mem::replace(&mut line.get_mut().tail, offset);
                    if let Some(previous) = self.pending.get_mut(&tail) {
                        previous.next_of_key = Some(offset);
                    }
                    false
                }
                Entry::Vacant(line) => {
                    line.insert(KeyLine {
                        head: offset,
                        tail: offset,
                    });
                    true
                }
            },
            None => true,
        };
        if eligible {
            self.make_ready(offset);
        }
    }

    /// Takes a done event out of its key's line: from the front, the next in line becomes
    /// ready; from elsewhere (dead-lettered as it was admitted) it is unlinked where it is.
    pub(super) fn leave_key_line(&mut self, key: u64, offset: u64, next_of_key: Option<u64>) {
        let Entry::Occupied(mut line) = self.key_lines.entry(key) else {
            return;
        };
        if line.get().head == offset {
            match next_of_key {
                Some(next) => {
                    line.get_mut().head = next;
                    self.make_ready(next);
                }
                None => {
                    line.remove();
                }
            }
            return;
        }
        // Not at the front (dead-lettered as it was admitted): unlink it where it is.
        let mut previous = line.get().head;
        while let Some(next) = self.pending.get(&previous).and_then(|p| p.next_of_key) {
            if next == offset {
                if let Some(before) = self.pending.get_mut(&previous) {
                    before.next_of_key = next_of_key;
                }
                if line.get().tail == offset {
                    line.get_mut().tail = previous;
                }
                return;
            }
            previous = next;
        }
    }

    /// Puts an event that is first of its key in line for delivery, unless it waits for a
    /// retry (the timer releases it when due).
    fn make_ready(&mut self, offset: u64) {
        if let Some(pending) = self.pending.get(&offset)
            && matches!(pending.state, State::Queued)
        {
            self.ready.push_back(offset);
        }
    }
}
