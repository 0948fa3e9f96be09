//! Group commit of the metadata store: offset commits and key-value writes and deletes from
//! any number of callers share redb write transactions, and so their fsyncs.
//!
//! A caller queues its write and waits. One thread, the writer, takes everything queued (up
//! to [`MAX_BATCH`] writes), applies the writes in the order they were queued inside one write
//! transaction, commits it with immediate durability, and only then answers each caller. While
//! it commits, new writes queue up for the next transaction, so the more callers write at
//! once, the more writes each fsync carries; a lone caller waits for one commit, as before.
//!
//! Within a batch each write sees the ones before it, and each gets its own answer: a
//! condition that does not hold refuses only that write (before it changes anything). A
//! storage error spoils the transaction: nothing of the batch is committed and every write in
//! it gets the error. No caller is answered before the commit that holds its write is
//! durable, and a refusal is answered only once the state it was judged against is durable.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll};
use std::thread::JoinHandle;

use runnel_backend::{BackendError, Result};
use runnel_clock::{Micros, SharedClock};
use tokio::sync::oneshot;

use crate::error::replicate;
use crate::meta::{Meta, Write, Writes};
use crate::sync::lock;

/// Most writes one transaction carries; the rest wait for the next one.
const MAX_BATCH: usize = 1024;

/// The queue of the metadata store's writes and the thread that commits them. Dropping it
/// commits what is still queued, then stops the thread.
pub(crate) struct GroupCommit {
    queue: Arc<Queue>,
    thread: Option<JoinHandle<()>>,
}

struct Queue {
    state: Mutex<State>,
    /// Signalled when the queue stops being empty, and on closing.
    ready: Condvar,
    /// Writes answered since opening.
    answered: AtomicU64,
}

#[derive(Default)]
struct State {
    jobs: Vec<Box<dyn Queued>>,
    /// Set on drop: commit what is queued, then stop.
    closing: bool,
    /// Set when the writer thread has ended; nothing queued after that would be answered.
    stopped: bool,
}

/// The answer to a queued write: resolves once the commit holding it is durable.
pub(crate) struct Answer<T>(oneshot::Receiver<Result<T>>);

impl<T> Future for Answer<T> {
    type Output = Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|answer| answer.unwrap_or_else(|_| Err(writer_stopped())))
    }
}

fn writer_stopped() -> BackendError {
    BackendError::Engine("the metadata store's writer stopped before answering".into())
}

impl GroupCommit {
    /// Starts the writer thread for `meta`; "now" for expiry and TTLs is read from `clock` once
    /// per batch.
    pub fn start(meta: Arc<Meta>, clock: SharedClock) -> Result<Self> {
        let queue = Arc::new(Queue {
            state: Mutex::new(State::default()),
            ready: Condvar::new(),
            answered: AtomicU64::new(0),
        });
        let thread = {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name("runnel-meta-commit".into())
                .spawn(move || queue.run(&meta, &clock))
                .map_err(|e| {
                    BackendError::Engine(format!("starting the metadata writer thread: {e}"))
                })?
        };
        Ok(Self {
            queue,
            thread: Some(thread),
        })
    }

    /// Queues `write` for the next batch. Await the answer without holding anything that
    /// closing the backend would wait for.
    pub fn submit<W: Write>(&self, write: W) -> Result<Answer<W::Output>> {
        let (reply, answer) = oneshot::channel();
        let mut state = lock(&self.queue.state);
        if state.stopped {
            return Err(writer_stopped());
        }
        // The writer only sleeps on an empty queue.
        let wake = state.jobs.is_empty();
        state.jobs.push(Box::new(Job {
            write,
            outcome: None,
            reply,
        }));
        drop(state);
        if wake {
            self.queue.ready.notify_one();
        }
        Ok(Answer(answer))
    }

    /// Writes answered since opening (refused and failed ones included).
    pub fn answered(&self) -> u64 {
        self.queue.answered.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    fn queued(&self) -> usize {
        lock(&self.queue.state).jobs.len()
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        lock(&self.queue.state).closing = true;
        self.queue.ready.notify_one();
        if let Some(thread) = self.thread.take() {
            // A writer that panicked has already released its callers (see `Stopped`).
            let _ = thread.join();
        }
    }
}

impl Queue {
    /// The writer thread: takes what is queued, commits it, answers, again; on closing, once
    /// the queue is empty, returns.
    fn run(&self, meta: &Meta, clock: &SharedClock) {
        let _stopped = Stopped(self);
        loop {
            let jobs = {
                let mut state = lock(&self.state);
                while state.jobs.is_empty() {
                    if state.closing {
                        return;
                    }
                    state = self.ready.wait(state).unwrap_or_else(|p| p.into_inner());
                }
                if state.jobs.len() > MAX_BATCH {
                    state.jobs.drain(..MAX_BATCH).collect()
                } else {
                    std::mem::take(&mut state.jobs)
                }
            };
            self.commit(meta, clock.now_micros(), jobs);
        }
    }

    /// Applies `jobs` in order in one transaction, commits it, then answers each.
    fn commit(&self, meta: &Meta, now: Micros, mut jobs: Vec<Box<dyn Queued>>) {
        let batch = meta.write_batch(|writes| {
            jobs.iter_mut()
                .try_for_each(|job| job.apply(&mut *writes, now))
        });
        self.answered
            .fetch_add(jobs.len() as u64, Ordering::Relaxed);
        for job in jobs {
            job.answer(&batch);
        }
    }
}

/// Marks the writer stopped when its thread ends for any reason, a panic included, and
/// releases whoever is still queued (their answers resolve to an error instead of hanging).
struct Stopped<'a>(&'a Queue);

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        let orphans = {
            let mut state = lock(&self.0.state);
            state.stopped = true;
            std::mem::take(&mut state.jobs)
        };
        drop(orphans);
    }
}

/// A queued write, its answer once applied, and where the answer goes.
struct Job<W: Write> {
    write: W,
    /// `None` until applied in a batch.
    outcome: Option<Result<W::Output>>,
    reply: oneshot::Sender<Result<W::Output>>,
}

/// A [`Job`] of any kind of write, as the queue holds them.
trait Queued: Send {
    /// Applies the write in the batch's transaction and keeps its outcome. Only an error that
    /// spoils the transaction is returned; a refused condition is this write's outcome.
    fn apply(&mut self, writes: &mut Writes<'_>, now: Micros) -> Result<()>;

    /// Sends the answer: the write's outcome if its batch committed, else the batch's error.
    fn answer(self: Box<Self>, batch: &Result<()>);
}

impl<W: Write> Queued for Job<W> {
    fn apply(&mut self, writes: &mut Writes<'_>, now: Micros) -> Result<()> {
        match self.write.apply(writes, now) {
            Err(error) if !matches!(error, BackendError::CasConflict { .. }) => Err(error),
            outcome => {
                self.outcome = Some(outcome);
                Ok(())
            }
        }
    }

    fn answer(self: Box<Self>, batch: &Result<()>) {
        let answer = match (batch, self.outcome) {
            (Err(error), _) => Err(replicate(error)),
            (Ok(()), Some(outcome)) => outcome,
            // A batch commits only after every write in it was applied.
            (Ok(()), None) => Err(BackendError::Engine(
                "a metadata write was left out of its batch".into(),
            )),
        };
        // A caller that stopped waiting (its call was cancelled) needs no answer.
        let _ = self.reply.send(answer);
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use runnel_backend::{Expect, Revision};
    use runnel_clock::ManualClock;

    use super::*;
    use crate::meta::KvPut;

    const BUCKET: &str = "leases";

    fn open() -> (tempfile::TempDir, Arc<Meta>, GroupCommit) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let meta = Arc::new(Meta::open(&dir.path().join("meta.redb")).expect("open the store"));
        let clock = ManualClock::new(1_000_000_000).shared();
        let writes = GroupCommit::start(meta.clone(), clock).expect("start the writer");
        (dir, meta, writes)
    }

    fn put(key: &str, value: &str, expect: Expect) -> KvPut {
        KvPut {
            bucket: BUCKET.into(),
            key: key.into(),
            value: Bytes::from(value.to_string()),
            expect,
            ttl: None,
        }
    }

    fn wait<T>(answer: Answer<T>) -> Result<T> {
        answer
            .0
            .blocking_recv()
            .unwrap_or_else(|_| Err(writer_stopped()))
    }

    /// Queues a write and waits until the writer has taken it: with redb's write lock held
    /// elsewhere, the writer is then stuck committing it, and whatever is queued next waits
    /// for one batch together.
    fn occupy_writer(writes: &GroupCommit) -> Answer<Revision> {
        let first = writes
            .submit(put("first", "x", Expect::Any))
            .expect("queue a write");
        let deadline = Instant::now() + Duration::from_secs(10);
        while writes.queued() > 0 {
            assert!(Instant::now() < deadline, "the writer never took the write");
            std::thread::sleep(Duration::from_millis(1));
        }
        first
    }

    #[test]
    fn writes_queued_during_a_commit_share_the_next_commit() {
        let (_dir, meta, writes) = open();
        let held = meta.hold_write_lock().expect("hold the write lock");
        let first = occupy_writer(&writes);
        let answers: Vec<_> = (0..100)
            .map(|i| {
                writes
                    .submit(put(&format!("key-{i}"), "x", Expect::Any))
                    .expect("queue a write")
            })
            .collect();
        drop(held);

        assert_eq!(wait(first).expect("the first write"), 1);
        let revisions: Vec<Revision> = answers
            .into_iter()
            .map(|answer| wait(answer).expect("a write"))
            .collect();
        assert_eq!(revisions, (2..=101).collect::<Vec<_>>(), "applied in order");
        assert_eq!(meta.commits(), 2, "the first write, then the other hundred");
        assert_eq!(writes.answered(), 101);
    }

    #[test]
    fn a_conflict_in_a_batch_refuses_only_its_own_write() {
        let (_dir, meta, writes) = open();
        let held = meta.hold_write_lock().expect("hold the write lock");
        let first = occupy_writer(&writes);
        let winner = writes.submit(put("lease", "winner", Expect::Absent));
        let loser = writes.submit(put("lease", "loser", Expect::Absent));
        let other = writes.submit(put("lease-2", "other", Expect::Any));
        drop(held);
        wait(first).expect("the first write");

        let won = wait(winner.expect("queue")).expect("the first claim wins");
        match wait(loser.expect("queue")) {
            Err(BackendError::CasConflict { current, .. }) => {
                assert_eq!(current, Some(won), "judged after the write before it");
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
        assert_eq!(
            wait(other.expect("queue")).expect("an unrelated write"),
            won + 1
        );
        assert_eq!(meta.commits(), 2, "the three writes shared one commit");
        let lease = meta
            .kv_get(BUCKET, "lease", 1_000_000_000)
            .expect("read the lease")
            .expect("the lease exists");
        assert_eq!((lease.revision, lease.value), (won, Bytes::from("winner")));
    }
}
