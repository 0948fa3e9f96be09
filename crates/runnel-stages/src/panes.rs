//! Panes: the state that tumbling and sliding windows are built from.
//!
//! Event time is cut into panes of equal length aligned to the epoch (a tumbling window's
//! size; `gcd(size, slide)` for a sliding window). Each event updates exactly one pane row —
//! the row of its key in its pane — however many windows it belongs to, and a window's result
//! is the merge of its panes' rows when it fires. State is pane-major: a pane holds a row per
//! key that had events in it, and dropping a pane drops all of its rows at once.
//!
//! This file also holds the bookkeeping of windows that already fired but are still within
//! `allowed_lateness` ([`Reemits`]): their last revision per key, and which (window, key)
//! pairs a late event touched since the last advance.

use std::collections::{BTreeMap, BTreeSet};

use hashbrown::HashMap;
use serde::{Deserialize, Serialize};

use crate::aggregate::{Layout, Origin, Slot, heap_bytes};
use crate::extract::{EventTime, FieldValue};
use crate::keys::{KeyId, KeyTable};

/// One key's state in one pane (its slots are stored apart, in [`Pane::slots`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Row {
    pub(crate) key: KeyId,
    /// Arrival number of the last event that updated this row.
    pub(crate) seq: u64,
    /// That event's correlation id (UTF-8), overwritten in place when the length matches.
    pub(crate) correlation: Option<Box<[u8]>>,
}

/// What one event brings to a row.
pub(crate) struct Contribution<'a> {
    pub(crate) values: &'a [FieldValue],
    pub(crate) origin: Origin,
    pub(crate) seq: u64,
    pub(crate) correlation: Option<&'a str>,
}

/// All rows of one pane.
#[derive(Debug, Default)]
pub(crate) struct Pane {
    index: HashMap<KeyId, u32>,
    pub(crate) rows: Vec<Row>,
    /// `rows.len() × layout.width()` slots, row after row.
    pub(crate) slots: Vec<Slot>,
}

impl Pane {
    /// Adds an event of `key` to this pane, making its row (and counting a use of the key)
    /// if it is the key's first event here.
    pub(crate) fn add(
        &mut self,
        layout: &Layout,
        keys: &mut KeyTable,
        (start, key): (EventTime, KeyId),
        event: &Contribution<'_>,
    ) {
        let width = layout.width();
        let hinted = match keys.hint(key) {
            Some((pane, row)) if pane == start => self
                .rows
                .get(row as usize)
                .filter(|r| r.key == key)
                .map(|_| row),
            _ => None,
        };
        let row = match hinted.or_else(|| self.index.get(&key).copied()) {
            Some(row) => row as usize,
            None => {
                let row = self.rows.len();
                self.index.insert(key, row as u32);
                self.rows.push(Row {
                    key,
                    seq: 0,
                    correlation: None,
                });
                layout.push_empty(&mut self.slots);
                keys.acquire(key);
                row
            }
        };
        layout.update(
            &mut self.slots[row * width..(row + 1) * width],
            event.values,
            event.origin,
        );
        keys.set_hint(key, Some((start, row as u32)));
        let state = &mut self.rows[row];
        state.seq = event.seq;
        match (&mut state.correlation, event.correlation) {
            (Some(kept), Some(new)) if kept.len() == new.len() => {
                kept.copy_from_slice(new.as_bytes())
            }
            (kept, new) => *kept = new.map(|c| c.as_bytes().into()),
        }
    }

    /// The row of `key`, if it has one.
    pub(crate) fn row_of(&self, key: KeyId) -> Option<usize> {
        self.index.get(&key).map(|&row| row as usize)
    }

    /// The slots of row `row`.
    pub(crate) fn slots_of(&self, row: usize, width: usize) -> &[Slot] {
        &self.slots[row * width..(row + 1) * width]
    }

    fn release(self, keys: &mut KeyTable) {
        for row in &self.rows {
            keys.release(row.key);
        }
    }

    fn heap_bytes(&self) -> usize {
        self.index.capacity() * (std::mem::size_of::<(KeyId, u32)>() + 1)
            + self.rows.capacity() * std::mem::size_of::<Row>()
            + self
                .rows
                .iter()
                .map(|r| r.correlation.as_ref().map_or(0, |c| c.len()))
                .sum::<usize>()
            + self.slots.capacity() * std::mem::size_of::<Slot>()
            + heap_bytes(&self.slots)
    }
}

/// Panes of one length, by start time.
#[derive(Debug, Default)]
pub(crate) struct PaneStore {
    pub(crate) panes: BTreeMap<EventTime, Pane>,
}

impl PaneStore {
    /// The pane starting at `start`, made if missing (sized like the newest pane, as the
    /// next pane usually holds about as many keys).
    pub(crate) fn pane_mut(&mut self, start: EventTime, width: usize) -> &mut Pane {
        let rows = self.panes.values().next_back().map_or(0, |p| p.rows.len());
        self.panes.entry(start).or_insert_with(|| Pane {
            index: HashMap::with_capacity(rows),
            rows: Vec::with_capacity(rows),
            slots: Vec::with_capacity(rows * width),
        })
    }

    /// The start of the first pane at or after `from`.
    pub(crate) fn first_from(&self, from: EventTime) -> Option<EventTime> {
        self.panes.range(from..).next().map(|(&start, _)| start)
    }

    /// Drops the leading panes for which `expired(start)` holds, releasing their keys.
    /// `expired` must be monotonic: true up to some start, false after.
    pub(crate) fn purge(&mut self, keys: &mut KeyTable, expired: impl Fn(EventTime) -> bool) {
        while let Some(entry) = self.panes.first_entry() {
            if !expired(*entry.key()) {
                break;
            }
            entry.remove().release(keys);
        }
    }

    /// Rows over all panes.
    pub(crate) fn rows(&self) -> usize {
        self.panes.values().map(|p| p.rows.len()).sum()
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.panes
            .values()
            .map(|p| std::mem::size_of::<(EventTime, Pane)>() + p.heap_bytes())
            .sum()
    }

    /// The panes as stored in a snapshot.
    pub(crate) fn to_saved(&self) -> Vec<SavedPane<'_>> {
        self.panes
            .iter()
            .map(|(&start, pane)| SavedPane {
                start,
                rows: std::borrow::Cow::Borrowed(&pane.rows),
                slots: std::borrow::Cow::Borrowed(&pane.slots),
            })
            .collect()
    }

    /// Panes from a snapshot, counting a use of each row's key; `None` if they do not fit
    /// the layout and the key table.
    pub(crate) fn from_saved(
        saved: Vec<SavedPane<'static>>,
        layout: &Layout,
        keys: &mut KeyTable,
        pane_len: i64,
    ) -> Option<Self> {
        let mut store = Self::default();
        for pane in saved {
            let start = pane.start;
            let rows = pane.rows.into_owned();
            let slots = pane.slots.into_owned();
            if start.rem_euclid(pane_len) != 0
                || slots.len() != rows.len() * layout.width()
                || !layout.is_valid(&slots)
            {
                return None;
            }
            let mut index = HashMap::with_capacity(rows.len());
            for (i, row) in rows.iter().enumerate() {
                if keys.get(row.key).is_empty() || index.insert(row.key, i as u32).is_some() {
                    return None;
                }
                keys.acquire(row.key);
            }
            if store
                .panes
                .insert(start, Pane { index, rows, slots })
                .is_some()
            {
                return None;
            }
        }
        Some(store)
    }
}

/// A pane as a snapshot holds it.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SavedPane<'a> {
    start: EventTime,
    rows: std::borrow::Cow<'a, [Row]>,
    slots: std::borrow::Cow<'a, [Slot]>,
}

/// Windows that fired and may still be revised, and the revisions pending.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Reemits {
    /// Last revision emitted, per window end and key, for windows within allowed lateness.
    revisions: BTreeMap<EventTime, BTreeMap<KeyId, u32>>,
    /// (window end, key) pairs a late event updated since the last advance.
    pub(crate) dirty: BTreeSet<(EventTime, KeyId)>,
}

impl Reemits {
    /// Notes that `key`'s window ending at `end` was emitted as `revision`.
    pub(crate) fn record(&mut self, end: EventTime, key: KeyId, revision: u32) {
        self.revisions.entry(end).or_default().insert(key, revision);
    }

    /// The next revision of `key`'s window ending at `end`.
    pub(crate) fn next_revision(&self, end: EventTime, key: KeyId) -> u32 {
        self.revisions
            .get(&end)
            .and_then(|keys| keys.get(&key))
            .map_or(1, |r| r + 1)
    }

    /// Forgets windows for which `expired(end)` holds (monotonic, as in [`PaneStore::purge`]).
    pub(crate) fn purge(&mut self, expired: impl Fn(EventTime) -> bool) {
        while let Some(entry) = self.revisions.first_entry() {
            if !expired(*entry.key()) {
                break;
            }
            entry.remove();
        }
    }

    /// Whether every key named is in the table.
    pub(crate) fn is_valid(&self, keys: &KeyTable) -> bool {
        self.revisions
            .values()
            .flat_map(|k| k.keys())
            .chain(self.dirty.iter().map(|(_, k)| k))
            .all(|&k| !keys.get(k).is_empty())
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        let entry = std::mem::size_of::<(KeyId, u32)>() + 8;
        self.revisions
            .values()
            .map(|k| k.len() * entry)
            .sum::<usize>()
            + self.dirty.len() * (std::mem::size_of::<(EventTime, KeyId)>() + 8)
    }
}
