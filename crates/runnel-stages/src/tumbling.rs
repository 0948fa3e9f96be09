//! Tumbling windows: back-to-back windows of `size`, `[k·size, (k+1)·size)`.
//!
//! Each window is exactly one pane, so an event updates one row and a firing window emits its
//! pane's rows as they are, with no merging. The pane is dropped once the watermark passes
//! `end + allowed_lateness`; until then a late event updates the row and the window is
//! re-emitted with the next revision at the next advance.

use serde::{Deserialize, Serialize};

use crate::aggregate::Layout;
use crate::extract::EventTime;
use crate::keys::{KeyId, KeyTable};
use crate::panes::{Contribution, PaneStore, Reemits, SavedPane};
use crate::result::Emitter;
use crate::stage::Placement;

/// The tumbling window operator.
#[derive(Debug)]
pub(crate) struct Tumbling {
    size: i64,
    store: PaneStore,
    reemits: Reemits,
    /// Every window ending at or before this has fired.
    fired_until: Option<EventTime>,
}

/// What a snapshot keeps of a tumbling window operator.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SavedTumbling<'a> {
    panes: Vec<SavedPane<'a>>,
    reemits: std::borrow::Cow<'a, Reemits>,
    fired_until: Option<EventTime>,
}

impl Tumbling {
    pub(crate) fn new(size: i64) -> Self {
        Self {
            size,
            store: PaneStore::default(),
            reemits: Reemits::default(),
            fired_until: None,
        }
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
        let start = time - time.rem_euclid(self.size);
        let end = start + self.size;
        if end.saturating_add(lateness) <= watermark {
            return Placement::TooLate { last_end: end };
        }
        let placement = if end <= watermark {
            self.reemits.dirty.insert((end, key));
            Placement::Late
        } else {
            Placement::OnTime
        };
        self.store
            .pane_mut(start, layout.width())
            .add(layout, keys, (start, key), event);
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
            let Some(pane) = self.store.panes.get(&(end - self.size)) else {
                continue;
            };
            if let Some(row) = pane.row_of(key) {
                let revision = self.reemits.next_revision(end, key);
                emitter.emit(
                    keys.get(key),
                    (end - self.size, end),
                    revision,
                    pane.slots_of(row, width),
                    pane.rows[row].correlation.as_deref(),
                );
                self.reemits.record(end, key, revision);
            }
        }
        if self.fired_until != Some(EventTime::MAX) {
            let from = self
                .fired_until
                .map_or(EventTime::MIN, |f| f - self.size + 1);
            for (&start, pane) in self.store.panes.range(from..) {
                let end = start + self.size;
                if end > watermark {
                    break;
                }
                let record = lateness > 0 && end.saturating_add(lateness) > watermark;
                for (row, state) in pane.rows.iter().enumerate() {
                    emitter.emit(
                        keys.get(state.key),
                        (start, end),
                        1,
                        pane.slots_of(row, width),
                        state.correlation.as_deref(),
                    );
                    if record {
                        self.reemits.record(end, state.key, 1);
                    }
                }
            }
            self.fired_until = Some(self.fired_until.map_or(watermark, |f| f.max(watermark)));
        }
        let size = self.size;
        self.store.purge(keys, |start| {
            (start + size).saturating_add(lateness) <= watermark
        });
        self.reemits
            .purge(|end| end.saturating_add(lateness) <= watermark);
    }

    /// Windows with state that have not fired yet, over all keys.
    pub(crate) fn open_windows(&self) -> u64 {
        self.store
            .panes
            .iter()
            .filter(|(start, _)| self.fired_until.is_none_or(|f| *start + self.size > f))
            .map(|(_, pane)| pane.rows.len() as u64)
            .sum()
    }

    pub(crate) fn rows(&self) -> usize {
        self.store.rows()
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.store.heap_bytes() + self.reemits.heap_bytes()
    }

    pub(crate) fn save(&self) -> SavedTumbling<'_> {
        SavedTumbling {
            panes: self.store.to_saved(),
            reemits: std::borrow::Cow::Borrowed(&self.reemits),
            fired_until: self.fired_until,
        }
    }

    pub(crate) fn restore(
        mut self,
        saved: SavedTumbling<'static>,
        layout: &Layout,
        keys: &mut KeyTable,
    ) -> Option<Self> {
        self.store = PaneStore::from_saved(saved.panes, layout, keys, self.size)?;
        self.reemits = saved.reemits.into_owned();
        self.fired_until = saved.fired_until;
        self.reemits.is_valid(keys).then_some(self)
    }
}
