//! Session windows: per key, events closer than `gap` to each other share a window.
//!
//! Flink's merging semantics: each event opens a window `[t, t + gap)`; windows of one key
//! that overlap or touch are merged into one `[earliest start, latest end)`, their states
//! merged. A session fires when the watermark reaches its end, and is kept until
//! `end + allowed_lateness`: a late event that lands in it (or that bridges two sessions)
//! updates it and it fires again with the next revision. A merged session's revision follows
//! the highest revision of the sessions it absorbed, and its bounds may be wider: a result
//! supersedes every earlier result of the same key whose window it contains.
//!
//! Sessions do not line up across keys, so each key with sessions has one timer — the time
//! its earliest session must fire or be dropped — in an ordered set walked by the watermark.

use std::collections::BTreeSet;

use hashbrown::HashMap;
use serde::{Deserialize, Serialize};

use crate::aggregate::{Layout, Slot, heap_bytes};
use crate::extract::EventTime;
use crate::keys::{KeyId, KeyTable};
use crate::panes::Contribution;
use crate::result::Emitter;
use crate::stage::Placement;

/// One session of one key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Session {
    start: EventTime,
    end: EventTime,
    /// Arrival number and correlation id of the last event that updated it.
    seq: u64,
    correlation: Option<Box<[u8]>>,
    /// The last revision emitted; 0 before the first.
    emitted: u32,
    /// Changed since its last emission.
    pending: bool,
    slots: Vec<Slot>,
}

#[derive(Debug, Default)]
struct KeySessions {
    /// Sorted by start, disjoint and not touching.
    sessions: Vec<Session>,
    timer: Option<EventTime>,
}

/// The session window operator.
#[derive(Debug)]
pub(crate) struct Sessions {
    gap: i64,
    by_key: HashMap<KeyId, KeySessions>,
    timers: BTreeSet<(EventTime, KeyId)>,
}

/// What a snapshot keeps of a session window operator: each key's sessions, by key id.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SavedSessions<'a> {
    keys: Vec<(KeyId, std::borrow::Cow<'a, [Session]>)>,
}

impl Sessions {
    pub(crate) fn new(gap: i64) -> Self {
        Self {
            gap,
            by_key: HashMap::new(),
            timers: BTreeSet::new(),
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
        let (start, end) = (time, time + self.gap);
        let entry = self.by_key.entry(key).or_default();
        let sessions = &mut entry.sessions;
        let first = sessions.partition_point(|s| s.end < start);
        let last = first + sessions[first..].partition_point(|s| s.start <= end);
        if first == last && end.saturating_add(lateness) <= watermark {
            if sessions.is_empty() {
                self.by_key.remove(&key);
            }
            return Placement::TooLate { last_end: end };
        }
        if sessions.is_empty() {
            keys.acquire(key);
        }
        let mut merged = match sessions.drain(first..last).reduce(|mut a, b| {
            layout.merge(&mut a.slots, &b.slots);
            a.start = a.start.min(b.start);
            a.end = a.end.max(b.end);
            a.emitted = a.emitted.max(b.emitted);
            if b.seq > a.seq {
                (a.seq, a.correlation) = (b.seq, b.correlation);
            }
            a
        }) {
            Some(session) => session,
            None => {
                let mut slots = Vec::with_capacity(layout.width());
                layout.push_empty(&mut slots);
                Session {
                    start,
                    end,
                    seq: 0,
                    correlation: None,
                    emitted: 0,
                    pending: false,
                    slots,
                }
            }
        };
        merged.start = merged.start.min(start);
        merged.end = merged.end.max(end);
        layout.update(&mut merged.slots, event.values, event.origin);
        merged.seq = event.seq;
        merged.correlation = event.correlation.map(|c| c.as_bytes().into());
        merged.pending = true;
        let placement = if merged.emitted > 0 || merged.end <= watermark {
            Placement::Late
        } else {
            Placement::OnTime
        };
        sessions.insert(first, merged);
        self.reschedule(key, lateness);
        placement
    }

    /// Sets `key`'s timer to when its earliest session must next fire or be dropped.
    fn reschedule(&mut self, key: KeyId, lateness: i64) {
        let Some(entry) = self.by_key.get_mut(&key) else {
            return;
        };
        let next = entry
            .sessions
            .iter()
            .map(|s| {
                if s.pending {
                    s.end
                } else {
                    s.end.saturating_add(lateness)
                }
            })
            .min();
        if entry.timer != next {
            if let Some(old) = entry.timer {
                self.timers.remove(&(old, key));
            }
            if let Some(new) = next {
                self.timers.insert((new, key));
            }
            entry.timer = next;
        }
    }

    pub(crate) fn fire(
        &mut self,
        emitter: &mut Emitter<'_>,
        keys: &mut KeyTable,
        (watermark, lateness): (EventTime, i64),
    ) {
        while let Some(&(time, key)) = self.timers.first() {
            if time > watermark {
                break;
            }
            self.timers.pop_first();
            let Some(entry) = self.by_key.get_mut(&key) else {
                continue;
            };
            entry.timer = None;
            for session in entry.sessions.iter_mut() {
                if session.pending && session.end <= watermark {
                    session.emitted += 1;
                    session.pending = false;
                    emitter.emit(
                        keys.get(key),
                        (session.start, session.end),
                        session.emitted,
                        &session.slots,
                        session.correlation.as_deref(),
                    );
                }
            }
            entry
                .sessions
                .retain(|s| s.end.saturating_add(lateness) > watermark);
            if entry.sessions.is_empty() {
                self.by_key.remove(&key);
                keys.release(key);
            } else {
                self.reschedule(key, lateness);
            }
        }
    }

    /// Sessions with changes not emitted yet.
    pub(crate) fn open_windows(&self) -> u64 {
        self.by_key
            .values()
            .flat_map(|k| &k.sessions)
            .filter(|s| s.pending)
            .count() as u64
    }

    pub(crate) fn rows(&self) -> usize {
        self.by_key.values().map(|k| k.sessions.len()).sum()
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.by_key.capacity() * (std::mem::size_of::<(KeyId, KeySessions)>() + 1)
            + self.timers.len() * (std::mem::size_of::<(EventTime, KeyId)>() + 8)
            + self
                .by_key
                .values()
                .flat_map(|k| &k.sessions)
                .map(|s| {
                    std::mem::size_of::<Session>()
                        + s.slots.capacity() * std::mem::size_of::<Slot>()
                        + heap_bytes(&s.slots)
                        + s.correlation.as_ref().map_or(0, |c| c.len())
                })
                .sum::<usize>()
    }

    pub(crate) fn save(&self) -> SavedSessions<'_> {
        let mut saved: Vec<_> = self
            .by_key
            .iter()
            .map(|(&key, k)| (key, std::borrow::Cow::Borrowed(k.sessions.as_slice())))
            .collect();
        saved.sort_by_key(|(key, _)| *key);
        SavedSessions { keys: saved }
    }

    pub(crate) fn restore(
        mut self,
        saved: SavedSessions<'static>,
        layout: &Layout,
        keys: &mut KeyTable,
        lateness: i64,
    ) -> Option<Self> {
        for (key, sessions) in saved.keys {
            let sessions = sessions.into_owned();
            let ordered = sessions.windows(2).all(|w| w[0].end < w[1].start);
            let valid = sessions.iter().all(|s| {
                s.start < s.end && s.slots.len() == layout.width() && layout.is_valid(&s.slots)
            });
            if sessions.is_empty() || !ordered || !valid || keys.get(key).is_empty() {
                return None;
            }
            let entry = KeySessions {
                sessions,
                timer: None,
            };
            if self.by_key.insert(key, entry).is_some() {
                return None;
            }
            keys.acquire(key);
            self.reschedule(key, lateness);
        }
        Some(self)
    }
}
