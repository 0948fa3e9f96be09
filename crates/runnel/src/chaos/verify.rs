//! The verdict: what the publishers were promised (ids answered 202 and their positions)
//! against what one consumer group was handed, acknowledged and dead-lettered. Pure, so a
//! test can feed it a record with a hole and see it report the loss.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::Serialize;

/// Where the server said an acknowledged event went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub partition: u32,
    pub offset: u64,
}

/// One message a pull handed out.
#[derive(Debug, Clone)]
pub struct Handout {
    pub id: String,
    pub position: Position,
}

/// What one group's consumer saw and settled (confirmed by the server's answer).
#[derive(Debug, Default)]
pub struct GroupRecord {
    pub handouts: Vec<Handout>,
    /// Acknowledgements answered 200, per event id.
    pub acked: HashMap<String, u32>,
    /// `permanent` nacks answered 200, per event id.
    pub nacked: HashMap<String, u32>,
    /// Settlements (ack or nack) sent without an answer: the server died with the request
    /// in flight, so whether it settled the event is unknown.
    pub unanswered: HashMap<String, u32>,
}

/// A dead-letter entry as listed at the end.
#[derive(Debug, Clone)]
pub struct DlqSeen {
    pub event_id: String,
    pub class: String,
    pub position: Position,
    /// The stored event equals the published one (id, type and data).
    pub intact: bool,
}

/// One partition of the stream as the server reports it.
#[derive(Debug, Clone, Copy)]
pub struct PartitionSpan {
    pub partition: u32,
    pub start: u64,
    pub high_watermark: u64,
}

/// Everything known about one group at the end of a run.
pub struct GroupInput<'a> {
    pub name: &'a str,
    pub processed_ids: bool,
    pub record: &'a GroupRecord,
    pub dlq: &'a [DlqSeen],
    /// Whether the harness dead-letters this event id on purpose.
    pub expect_dead: &'a dyn Fn(&str) -> bool,
}

/// Figures and findings for one group.
#[derive(Debug, Clone, Serialize)]
pub struct GroupVerdict {
    pub group: String,
    pub processed_ids: bool,
    /// Acknowledged events this group was handed or holds in its dead-letter queue.
    pub delivered: u64,
    /// Acknowledged events it was never handed and does not hold in its dead-letter queue.
    pub lost: u64,
    pub lost_examples: Vec<String>,
    pub handouts: u64,
    /// Hand-outs beyond the first of each position (at-least-once after crashes).
    pub redeliveries: u64,
    /// Events whose acknowledgement was answered 200 more than once.
    pub processed_twice: u64,
    /// Delivered events whose only settlements got no answer (the server died with the ack
    /// in flight) and that were not delivered again: the server had recorded the ack.
    pub settled_unconfirmed: u64,
    /// Delivered events that were never settled at all (must be 0: the consumer settles
    /// everything it is handed).
    pub never_settled: u64,
    pub dlq_entries: u64,
    /// Entries of events the harness did not dead-letter, by class (`crash_loop`, …).
    pub dlq_unexpected: BTreeMap<String, u64>,
    /// Entries whose stored event differs from the published one.
    pub dlq_damaged: u64,
    /// Events dead-lettered on purpose that are not in the queue.
    pub dlq_missing: u64,
    /// Hand-outs of an acknowledged id at another position than its 202 named.
    pub misplaced: u64,
    /// Event ids handed out at two different positions (a publish appended twice).
    pub ids_at_two_positions: u64,
    /// Offsets below a partition's high watermark never handed out nor dead-lettered.
    pub offset_gaps: u64,
    pub gap_examples: Vec<String>,
}

impl GroupVerdict {
    /// The findings that break a promise. Redeliveries are reported, not judged; an event
    /// acknowledged (200) twice is judged only with the processed-id store on, where an ack
    /// is answered after its id is recorded, so it must never be handed out again.
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut check = |bad: u64, what: &str| {
            if bad > 0 {
                out.push(format!("{}: {bad} {what}", self.group));
            }
        };
        check(self.lost, "acknowledged events lost");
        if self.processed_ids {
            check(
                self.processed_twice,
                "events acknowledged twice with the processed-id store on",
            );
        }
        check(self.never_settled, "events handed out but never settled");
        check(self.dlq_damaged, "dead-letter entries damaged");
        check(
            self.dlq_missing,
            "dead-lettered events missing from the queue",
        );
        check(
            self.misplaced,
            "hand-outs at another position than acknowledged",
        );
        check(self.ids_at_two_positions, "event ids stored twice");
        check(self.offset_gaps, "offsets never delivered");
        out
    }
}

const EXAMPLES: usize = 5;

pub fn verify_group(
    promised: &BTreeMap<String, Position>,
    partitions: &[PartitionSpan],
    input: GroupInput<'_>,
) -> GroupVerdict {
    let record = input.record;
    let in_dlq: HashMap<&str, &DlqSeen> =
        input.dlq.iter().map(|e| (e.event_id.as_str(), e)).collect();

    let handed: HashSet<&str> = record.handouts.iter().map(|h| h.id.as_str()).collect();
    let (mut delivered, mut lost, mut lost_examples, mut dlq_missing) = (0, 0, Vec::new(), 0);
    let (mut settled_unconfirmed, mut never_settled) = (0, 0);
    for id in promised.keys() {
        let dead = in_dlq.contains_key(id.as_str());
        if (input.expect_dead)(id) && !dead {
            dlq_missing += 1;
        }
        if handed.contains(id.as_str()) || dead {
            delivered += 1;
            let confirmed = record.acked.contains_key(id) || record.nacked.contains_key(id);
            if !confirmed && !dead {
                if record.unanswered.contains_key(id) {
                    settled_unconfirmed += 1;
                } else {
                    never_settled += 1;
                }
            }
        } else {
            lost += 1;
            if lost_examples.len() < EXAMPLES {
                lost_examples.push(id.clone());
            }
        }
    }

    let mut positions_of: HashMap<&str, BTreeSet<(u32, u64)>> = HashMap::new();
    let mut seen: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
    let mut misplaced = 0;
    for h in &record.handouts {
        let p = h.position;
        positions_of
            .entry(h.id.as_str())
            .or_default()
            .insert((p.partition, p.offset));
        seen.entry(p.partition).or_default().insert(p.offset);
        if promised.get(&h.id).is_some_and(|want| *want != p) {
            misplaced += 1;
        }
    }
    let distinct: usize = seen.values().map(BTreeSet::len).sum();
    let redeliveries = (record.handouts.len() - distinct) as u64;
    let ids_at_two_positions = positions_of.values().filter(|s| s.len() > 1).count() as u64;
    for entry in input.dlq {
        seen.entry(entry.position.partition)
            .or_default()
            .insert(entry.position.offset);
    }

    let (mut offset_gaps, mut gap_examples) = (0, Vec::new());
    for span in partitions {
        let have = seen.get(&span.partition);
        for offset in span.start..span.high_watermark {
            if !have.is_some_and(|s| s.contains(&offset)) {
                offset_gaps += 1;
                if gap_examples.len() < EXAMPLES {
                    gap_examples.push(format!("{}/{offset}", span.partition));
                }
            }
        }
    }

    let mut dlq_unexpected = BTreeMap::new();
    for entry in input.dlq {
        if !(input.expect_dead)(&entry.event_id) {
            *dlq_unexpected.entry(entry.class.clone()).or_insert(0) += 1;
        }
    }

    GroupVerdict {
        group: input.name.to_string(),
        processed_ids: input.processed_ids,
        delivered,
        lost,
        lost_examples,
        handouts: record.handouts.len() as u64,
        redeliveries,
        processed_twice: record.acked.values().filter(|n| **n > 1).count() as u64,
        settled_unconfirmed,
        never_settled,
        dlq_entries: input.dlq.len() as u64,
        dlq_unexpected,
        dlq_damaged: input.dlq.iter().filter(|e| !e.intact).count() as u64,
        dlq_missing,
        misplaced,
        ids_at_two_positions,
        offset_gaps,
        gap_examples,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(partition: u32, offset: u64) -> Position {
        Position { partition, offset }
    }

    /// Three events published to partition 0; `record` saw the ones in `handed` and acked them.
    fn run(
        handed: &[(&str, u64)],
        dlq: &[DlqSeen],
        expect_dead: &dyn Fn(&str) -> bool,
    ) -> GroupVerdict {
        let promised: BTreeMap<String, Position> = [("a", 0), ("b", 1), ("c", 2)]
            .iter()
            .map(|(id, o)| (id.to_string(), pos(0, *o)))
            .collect();
        let mut record = GroupRecord::default();
        for (id, offset) in handed {
            record.handouts.push(Handout {
                id: id.to_string(),
                position: pos(0, *offset),
            });
            *record.acked.entry(id.to_string()).or_default() += 1;
        }
        let spans = [PartitionSpan {
            partition: 0,
            start: 0,
            high_watermark: 3,
        }];
        verify_group(
            &promised,
            &spans,
            GroupInput {
                name: "g",
                processed_ids: true,
                record: &record,
                dlq,
                expect_dead,
            },
        )
    }

    #[test]
    fn a_complete_record_passes() {
        let verdict = run(&[("a", 0), ("b", 1), ("c", 2)], &[], &|_| false);
        assert_eq!(verdict.delivered, 3);
        assert!(verdict.failures().is_empty(), "{verdict:?}");
    }

    #[test]
    fn a_missing_event_is_reported_lost_with_its_offset_gap() {
        let verdict = run(&[("a", 0), ("c", 2)], &[], &|_| false);
        assert_eq!(verdict.lost, 1);
        assert_eq!(verdict.lost_examples, vec!["b".to_string()]);
        assert_eq!(verdict.offset_gaps, 1);
        assert_eq!(verdict.gap_examples, vec!["0/1".to_string()]);
        assert_eq!(verdict.failures().len(), 2, "{verdict:?}");
    }

    #[test]
    fn an_event_handed_out_whose_ack_got_no_answer_is_delivered_but_unconfirmed() {
        let promised: BTreeMap<String, Position> = [("a".to_string(), pos(0, 0))].into();
        let mut record = GroupRecord::default();
        record.handouts.push(Handout {
            id: "a".into(),
            position: pos(0, 0),
        });
        record.unanswered.insert("a".into(), 1);
        let spans = [PartitionSpan {
            partition: 0,
            start: 0,
            high_watermark: 1,
        }];
        fn input(record: &GroupRecord) -> GroupInput<'_> {
            fn never(_: &str) -> bool {
                false
            }
            GroupInput {
                name: "g",
                processed_ids: true,
                record,
                dlq: &[],
                expect_dead: &never,
            }
        }
        let verdict = verify_group(&promised, &spans, input(&record));
        assert_eq!((verdict.delivered, verdict.lost), (1, 0));
        assert_eq!(verdict.settled_unconfirmed, 1);
        assert!(verdict.failures().is_empty(), "{verdict:?}");

        record.unanswered.clear();
        let verdict = verify_group(&promised, &spans, input(&record));
        assert_eq!(verdict.never_settled, 1);
        assert_eq!(verdict.failures().len(), 1, "{verdict:?}");
    }

    #[test]
    fn double_acks_fail_only_with_the_processed_id_store_on() {
        let verdict = run(&[("a", 0), ("b", 1), ("b", 1), ("c", 2)], &[], &|_| false);
        assert_eq!(verdict.redeliveries, 1);
        assert_eq!(verdict.processed_twice, 1);
        assert_eq!(verdict.failures().len(), 1, "{verdict:?}");
        let without = GroupVerdict {
            processed_ids: false,
            ..verdict
        };
        assert!(without.failures().is_empty(), "{without:?}");
    }

    #[test]
    fn a_damaged_or_missing_dead_letter_fails() {
        let damaged = DlqSeen {
            event_id: "b".into(),
            class: "permanent".into(),
            position: pos(0, 1),
            intact: false,
        };
        let verdict = run(&[("a", 0), ("c", 2)], &[damaged], &|id| id == "b");
        assert_eq!(verdict.lost, 0);
        assert_eq!(verdict.dlq_damaged, 1);
        assert_eq!(verdict.failures().len(), 1, "{verdict:?}");

        let verdict = run(&[("a", 0), ("c", 2)], &[], &|id| id == "b");
        assert_eq!(verdict.dlq_missing, 1);
        assert_eq!(verdict.lost, 1);
    }

    #[test]
    fn an_event_at_another_position_than_acknowledged_fails() {
        let verdict = run(&[("a", 0), ("b", 2), ("c", 1)], &[], &|_| false);
        assert_eq!(verdict.misplaced, 2);
        assert!(!verdict.failures().is_empty());
    }
}
