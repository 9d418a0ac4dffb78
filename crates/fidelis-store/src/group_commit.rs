//! Group commit: realtime journals that arrive together share one transaction.
//!
//! A realtime journal alone pays a whole transaction: begin, lock, a handful of reads, the
//! writes, commit — a dozen round trips to the database and one WAL flush. Under load,
//! many such journals are waiting at the same moment. A committer worker takes the first
//! waiting journal and every journal already queued behind it (never waiting for
//! company: a journal alone is posted at once), posts them with
//! [`crate::engine::post_batch`] in one transaction, and answers each caller with its own
//! result after the commit. Every journal keeps its own outcome: a refused journal changes
//! nothing and does not affect its neighbours, exactly as when posted alone.
//!
//! Two journals with the same external id never share a transaction (the second waits for
//! the first to commit and then replays it, or is judged on its own if the first was
//! refused). If a group's transaction fails as a whole (a database error), each of its
//! journals is retried alone, so one journal's failure is never another's — unless the
//! database itself is unavailable (unreachable, or its disk full), when every journal of
//! the group answers that at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::{DateTime, Utc};
use rustc_hash::FxHashSet;
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::Store;
use crate::engine::{JournalResult, LoadedProgram, Prepared, Revision};
use crate::error::{Result, StoreError, Unavailability};

/// Most journals one group transaction takes.
const MAX_GROUP: usize = 256;
/// How many times a committer lets other tasks run to gather company for its group while
/// another group is being committed.
const COMPANY_YIELDS: usize = 16;
/// Journals that may wait for a committer before callers wait to enqueue.
const QUEUE: usize = 4_096;

struct Request {
    program: Arc<LoadedProgram>,
    journal: Prepared,
    now: DateTime<Utc>,
    reply: oneshot::Sender<Result<JournalResult>>,
}

/// The queue in front of the committer workers.
pub(crate) struct GroupCommit {
    sender: mpsc::Sender<Request>,
}

impl GroupCommit {
    /// Starts `workers` committers on the current Tokio runtime, posting through `store`
    /// (which must not itself route through a group commit).
    pub(crate) fn start(store: &Store, workers: usize) -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE);
        let receiver = Arc::new(Mutex::new(receiver));
        let busy = Arc::new(AtomicUsize::new(0));
        for _ in 0..workers.max(1) {
            tokio::spawn(worker(
                store.clone(),
                Arc::clone(&receiver),
                Arc::clone(&busy),
            ));
        }
        Self { sender }
    }

    /// Posts `journal` in the next group and waits for its result. Gives the journal back
    /// when the committers are gone (their runtime ended), for the caller to post alone.
    pub(crate) async fn post(
        &self,
        program: Arc<LoadedProgram>,
        journal: Prepared,
        now: DateTime<Utc>,
    ) -> std::result::Result<Result<JournalResult>, Prepared> {
        let (reply, answer) = oneshot::channel();
        let request = Request {
            program,
            journal,
            now,
            reply,
        };
        if let Err(mpsc::error::SendError(request)) = self.sender.send(request).await {
            return Err(request.journal);
        }
        // No answer: the worker was stopped with the request in hand (the runtime is
        // shutting down). Whether it committed is unknown; posting again is safe.
        Ok(answer.await.unwrap_or(Err(StoreError::Stopped)))
    }
}

async fn worker(
    store: Store,
    receiver: Arc<Mutex<mpsc::Receiver<Request>>>,
    busy: Arc<AtomicUsize>,
) {
    loop {
        let mut group = Vec::new();
        {
            let mut receiver = receiver.lock().await;
            match receiver.recv().await {
                Some(first) => group.push(first),
                None => return,
            }
            drain(&mut receiver, &mut group);
            // Under load (another group is being committed), the callers just answered
            // are already sending their next journals: let their tasks run a moment so
            // they join this group rather than each starting a small one of their own.
            // Idle, a journal never waits.
            for _ in 0..COMPANY_YIELDS {
                if busy.load(Ordering::Relaxed) == 0 || group.len() >= MAX_GROUP {
                    break;
                }
                tokio::task::yield_now().await;
                drain(&mut receiver, &mut group);
            }
        }
        busy.fetch_add(1, Ordering::Relaxed);
        commit(&store, group).await;
        busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Adds what is already queued to `group`, up to its limit.
fn drain(receiver: &mut mpsc::Receiver<Request>, group: &mut Vec<Request>) {
    while group.len() < MAX_GROUP {
        match receiver.try_recv() {
            Ok(next) => group.push(next),
            Err(_) => break,
        }
    }
}

/// Posts a group: in rounds (a journal whose external id is already in the round waits
/// for the next), and within a round one transaction per program.
async fn commit(store: &Store, mut waiting: Vec<Request>) {
    while !waiting.is_empty() {
        let mut names = FxHashSet::default();
        let (round, later): (Vec<Request>, Vec<Request>) = waiting.into_iter().partition(|r| {
            names.insert((
                r.program.id,
                r.journal.journal.external_id.as_str().to_owned(),
            ))
        });
        waiting = later;
        let mut round = round;
        while !round.is_empty() {
            let program = Arc::clone(&round[0].program);
            let (same, other): (Vec<Request>, Vec<Request>) = round.into_iter().partition(|r| {
                r.program.id == program.id && r.program.revision == program.revision
            });
            round = other;
            post_together(store, &program, same).await;
        }
    }
}

async fn post_together(store: &Store, program: &LoadedProgram, requests: Vec<Request>) {
    let now = requests
        .iter()
        .map(|r| r.now)
        .max()
        .unwrap_or_else(Utc::now);
    let journals: Vec<Prepared> = requests.iter().map(|r| r.journal.clone()).collect();
    match store
        .post_checked(program, &journals, now, None, Revision::Current)
        .await
    {
        Ok(results) if results.len() == requests.len() => {
            for (request, result) in requests.into_iter().zip(results) {
                let _ = request.reply.send(Ok(result));
            }
        }
        Ok(_) => {
            for request in requests {
                let _ = request.reply.send(Err(StoreError::Inconsistent(
                    "a group commit answered the wrong number of results".into(),
                )));
            }
        }
        // The database is gone or cannot write: retrying each journal alone would only
        // make every caller wait again for the same failure. (A busy database — a deadlock
        // broken by PostgreSQL, a lock — is retried journal by journal like any failure.)
        Err(StoreError::Unavailable { kind, detail }) if kind != Unavailability::Busy => {
            for request in requests {
                let _ = request.reply.send(Err(StoreError::Unavailable {
                    kind,
                    detail: detail.clone(),
                }));
            }
        }
        Err(e) if requests.len() == 1 => {
            if let Some(request) = requests.into_iter().next() {
                let _ = request.reply.send(Err(e));
            }
        }
        Err(_) => {
            for request in requests {
                let result = store
                    .post_checked(
                        program,
                        std::slice::from_ref(&request.journal),
                        request.now,
                        None,
                        Revision::Current,
                    )
                    .await
                    .and_then(|mut results| {
                        results.pop().ok_or_else(|| {
                            StoreError::Inconsistent(
                                "a journal posted alone answered nothing".into(),
                            )
                        })
                    });
                let _ = request.reply.send(result);
            }
        }
    }
}
