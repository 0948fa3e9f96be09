//! Sliding (hopping) windows: `size` long, one starting every `slide`, built from panes.
//!
//! Copying each event into the `size / slide` windows it belongs to would cost that many
//! updates per event and that many copies of state. Instead (as Arroyo does) time is cut into
//! panes of `gcd(size, slide)`: an event updates one pane row, and when a window fires its
//! result is the merge of the rows of its `size / pane` panes. A pane is dropped once the last
//! window containing it is past `end + allowed_lateness`.
//!
//! Windows are `[k·slide, k·slide + size)`; one fires when the watermark reaches its end, and
//! a late event re-emits each of its windows that already fired and is still within
//! `allowed_lateness`, with the next revision. Windows of one advance fire in end order.

use hashbrown::HashMap;
use hashbrown::hash_map::Entry;
use serde::{Deserialize, Serialize};

use crate::aggregate::{Layout, Slot};
use crate::extract::EventTime;
use crate::keys::{KeyId, KeyTable};
use crate::panes::{Contribution, PaneStore, Reemits, SavedPane};
use crate::result::Emitter;
use crate::stage::Placement;

/// The sliding window operator.
#[derive(Debug)]
pub(crate) struct Sliding {
    size: i64,
    slide: i64,
    pane: i64,
    store: PaneStore,
    reemits: Reemits,
    /// Every window ending at or before this has fired.
    fired_until: Option<EventTime>,
    scratch: Scratch,
}

/// Reused buffers for merging panes into windows.
#[derive(Debug, Default)]
struct Scratch {
    index: HashMap<KeyId, u32>,
    entries: Vec<Merged>,
    slots: Vec<Slot>,
}

#[derive(Debug)]
struct Merged {
    key: KeyId,
    /// Arrival number, pane and row of the last contributor, for its correlation id.
    seq: u64,
    pane: EventTime,
    row: u32,
}

/// What a snapshot keeps of a sliding window operator.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SavedSliding<'a> {
    panes: Vec<SavedPane<'a>>,
    reemits: std::borrow::Cow<'a, Reemits>,
    fired_until: Option<EventTime>,
}

fn floor(time: EventTime, step: i64) -> EventTime {
    time - time.rem_euclid(step)
}

impl Sliding {
    pub(crate) fn new(size: i64, slide: i64) -> Self {
        let pane = crate::spec::gcd(size as u64, slide as u64) as i64;
        Self {
            size,
            slide,
            pane,
            store: PaneStore::default(),
            reemits: Reemits::default(),
            fired_until: None,
            scratch: Scratch::default(),
        }
    }

    /// The end of the first window containing the pane starting at `pane_start`.
    fn first_end(&self, pane_start: EventTime) -> EventTime {
        floor(pane_start - self.size, self.slide) + self.slide + self.size
    }

    /// The end of the last window containing the pane starting at `pane_start`.
    fn last_end(&self, pane_start: EventTime) -> EventTime {
        floor(pane_start, self.slide) + self.size
    }

    pub(crate) fn add(
        &mut self,
        layout: &Layout,
        keys: &mut KeyTable,
        key: KeyId,
        time: EventTime,
        event: &Contribution<'_>,
        (watermark, lateness): (EventTime, i64),
    ) -> Placement {
        let pane_start = floor(time, self.pane);
        let last_end = self.last_end(pane_start);
        if last_end.saturating_add(lateness) <= watermark {
            return Placement::TooLate { last_end };
        }
        let mut placement = Placement::OnTime;
        let mut end = self.first_end(pane_start);
        while end <= last_end && end <= watermark {
            if end.saturating_add(lateness) > watermark {
                self.reemits.dirty.insert((end, key));
                placement = Placement::Late;
            }
            end += self.slide;
        }
        self.store
            .pane_mut(pane_start, layout.width())
            .add(layout, keys, (pane_start, key), event);
        placement
    }

    pub(crate) fn fire(
        &mut self,
        emitter: &mut Emitter<'_>,
        keys: &mut KeyTable,
        (watermark, lateness): (EventTime, i64),
    ) {
        let width = emitter.layout.width();
        for (end, key) in std::mem::take(&mut self.reemits.dirty) {
            let mut slots = Vec::with_capacity(width);
            emitter.layout.push_empty(&mut slots);
            let mut last: Option<(u64, &[u8])> = None;
            let mut found = false;
            for pane in self.store.panes.range(end - self.size..end).map(|(_, p)| p) {
                if let Some(row) = pane.row_of(key) {
                    found = true;
                    emitter.layout.merge(&mut slots, pane.slots_of(row, width));
                    let state = &pane.rows[row];
                    if last.is_none_or(|(seq, _)| seq < state.seq) {
                        last = Some((state.seq, state.correlation.as_deref().unwrap_or(&[])));
                    }
                }
            }
            if found {
                let revision = self.reemits.next_revision(end, key);
                let correlation = last.map(|(_, c)| c).filter(|c| !c.is_empty());
                emitter.emit(
                    keys.get(key),
                    (end - self.size, end),
                    revision,
                    &slots,
                    correlation,
                );
                self.reemits.record(end, key, revision);
            }
        }
        if self.fired_until != Some(EventTime::MAX) {
            let mut next = self
                .fired_until
                .map(|f| floor(f - self.size, self.slide) + self.slide + self.size);
            loop {
                let from = next.map_or(EventTime::MIN, |e| e - self.size);
                let Some(first) = self.store.first_from(from) else {
                    break;
                };
                let end = next.map_or(self.first_end(first), |e| e.max(self.first_end(first)));
                if end > watermark {
                    break;
                }
                self.fire_window(emitter, keys, end, (watermark, lateness));
                next = Some(end + self.slide);
            }
            self.fired_until = Some(self.fired_until.map_or(watermark, |f| f.max(watermark)));
        }
        let (size, slide) = (self.size, self.slide);
        self.store.purge(keys, |start| {
            (floor(start, slide) + size).saturating_add(lateness) <= watermark
        });
        self.reemits
            .purge(|end| end.saturating_add(lateness) <= watermark);
    }

    /// First emission of every key's window ending at `end`.
    fn fire_window(
        &mut self,
        emitter: &mut Emitter<'_>,
        keys: &KeyTable,
        end: EventTime,
        (watermark, lateness): (EventTime, i64),
    ) {
        let width = emitter.layout.width();
        let scratch = &mut self.scratch;
        scratch.index.clear();
        scratch.entries.clear();
        scratch.slots.clear();
        for (&start, pane) in self.store.panes.range(end - self.size..end) {
            for (row, state) in pane.rows.iter().enumerate() {
                let slots = pane.slots_of(row, width);
                match scratch.index.entry(state.key) {
                    Entry::Occupied(at) => {
                        let at = *at.get() as usize;
                        emitter
                            .layout
                            .merge(&mut scratch.slots[at * width..(at + 1) * width], slots);
                        let merged = &mut scratch.entries[at];
                        if merged.seq < state.seq {
                            (merged.seq, merged.pane, merged.row) = (state.seq, start, row as u32);
                        }
                    }
                    Entry::Vacant(vacant) => {
                        vacant.insert(scratch.entries.len() as u32);
                        scratch.entries.push(Merged {
                            key: state.key,
                            seq: state.seq,
                            pane: start,
                            row: row as u32,
                        });
                        scratch.slots.extend_from_slice(slots);
                    }
                }
            }
        }
        let record = lateness > 0 && end.saturating_add(lateness) > watermark;
        for (at, merged) in scratch.entries.iter().enumerate() {
            let correlation = self
                .store
                .panes
                .get(&merged.pane)
                .and_then(|p| p.rows.get(merged.row as usize))
                .and_then(|r| r.correlation.as_deref());
            emitter.emit(
                keys.get(merged.key),
                (end - self.size, end),
                1,
                &scratch.slots[at * width..(at + 1) * width],
                correlation,
            );
            if record {
                self.reemits.record(end, merged.key, 1);
            }
        }
        scratch.slots.clear();
    }

    /// Windows with state that have not fired yet, over all keys.
    pub(crate) fn open_windows(&self) -> u64 {
        let mut counted: HashMap<KeyId, EventTime> = HashMap::new();
        let mut open = 0u64;
        let unfired = self
            .fired_until
            .map(|f| floor(f - self.size, self.slide) + self.slide + self.size);
        for (&start, pane) in &self.store.panes {
            let first = self.first_end(start);
            let first = unfired.map_or(first, |u| first.max(u));
            let last = self.last_end(start);
            for row in &pane.rows {
                let from = counted
                    .get(&row.key)
                    .map_or(first, |&done| first.max(done + self.slide));
                if from <= last {
                    open += ((last - from) / self.slide + 1) as u64;
                    counted.insert(row.key, last);
                }
            }
        }
        open
    }

    pub(crate) fn rows(&self) -> usize {
        self.store.rows()
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.store.heap_bytes() + self.reemits.heap_bytes()
    }

    pub(crate) fn save(&self) -> SavedSliding<'_> {
        SavedSliding {
            panes: self.store.to_saved(),
            reemits: std::borrow::Cow::Borrowed(&self.reemits),
            fired_until: self.fired_until,
        }
    }

    pub(crate) fn restore(
        mut self,
        saved: SavedSliding<'static>,
        layout: &Layout,
        keys: &mut KeyTable,
    ) -> Option<Self> {
        self.store = PaneStore::from_saved(saved.panes, layout, keys, self.pane)?;
        self.reemits = saved.reemits.into_owned();
        self.fired_until = saved.fired_until;
        self.reemits.is_valid(keys).then_some(self)
    }
}
