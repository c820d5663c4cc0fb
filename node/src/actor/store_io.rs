//! What the actor's store work does, blocking (run on the pool only): the
//! core's `Persist` batches through the group-commit writer, its `Serve`
//! plans against the store, and batched signature checks.

use std::collections::BTreeSet;
use std::sync::Mutex;

use libp2p::PeerId;
use metamesh_exchange::io::{PersistBatch, Persisted, WriteOutcome};
use metamesh_exchange::serve::RecordSource;
use metamesh_protocol::record::{verify_resolved, KeyCache, RecordError};
use metamesh_protocol::wire::{Cursor, RequestFilters};
use metamesh_protocol::SignedRecord;
use metamesh_storage::{
    Batch, Declined, InsertOutcome, Outcomes, Store, StoreError, Urgency, Writer,
};

/// The store as the core's [`RecordSource`] (serving plans).
pub(crate) struct StoreSource<'a>(pub &'a Store);

impl RecordSource for StoreSource<'_> {
    type Error = StoreError;

    fn records_in_range(
        &self,
        origin: PeerId,
        from: u64,
        to: u64,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<Vec<SignedRecord>, StoreError> {
        self.0
            .records_in_range(origin, from, to, max_count, max_bytes)
    }

    fn query(
        &self,
        filters: &RequestFilters,
        cursor: Option<Cursor>,
        limit: usize,
    ) -> Result<(Vec<SignedRecord>, Option<Cursor>), StoreError> {
        match self.0.query(filters, cursor, limit) {
            Ok((found, next)) => Ok((found.into_iter().map(|(r, _)| r).collect(), next)),
            // A cursor naming no stored record: the page is empty, not an
            // internal error (issue 12 #12).
            Err(StoreError::Unsupported(_)) => Ok((Vec::new(), None)),
            Err(e) => Err(e),
        }
    }
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("writer answered {what}"))
}

/// Write a core batch durably (group commit: concurrent batches share one
/// flush; `lane` says whether it goes before bulk writes) and report each
/// record's outcome and the touched frontiers.
pub(crate) fn persist(
    store: &Store,
    writer: &Writer,
    batch: PersistBatch,
    lane: Urgency,
) -> Result<Persisted, StoreError> {
    // Small side tables first: the writer's flush below covers them.
    for (peer, bytes) in &batch.reputation {
        store.put_reputation(peer, bytes)?;
    }
    for (rec, body) in &batch.insights {
        store.put_latest_insight(rec, body)?;
    }
    if let Some(seq) = batch.own_seq {
        store.bump_own_seq(seq)?;
    }
    let mut touched: BTreeSet<PeerId> = BTreeSet::new();
    let mut outcomes = Vec::new();
    let mut flushed = false;
    if !batch.records.is_empty() {
        touched.extend(batch.records.iter().map(|(_, b)| b.origin));
        outcomes = insert_outcomes(writer.submit_in(lane, Batch::Insert(batch.records))?)?;
        flushed = true;
    }
    if !batch.declined.is_empty() {
        touched.extend(batch.declined.iter().map(|d| d.origin));
        let slots = batch
            .declined
            .iter()
            .map(|d| Declined {
                origin: d.origin,
                seq: d.seq,
                prev: d.prev,
                hash: d.hash,
            })
            .collect();
        writer.submit_in(lane, Batch::Decline(slots))?;
        flushed = true;
    }
    if !flushed {
        store.flush()?;
    }
    Ok(persisted(store, outcomes, touched))
}

/// The core's answer to a write: each record's outcome and the frontiers
/// of the origins it touched (read after the flush).
pub(crate) fn persisted(
    store: &Store,
    outcomes: Vec<WriteOutcome>,
    touched: BTreeSet<PeerId>,
) -> Persisted {
    let frontier = touched
        .into_iter()
        .map(|o| (o, store.frontier_of(&o)))
        .collect();
    Persisted { outcomes, frontier }
}

/// Each inserted record's outcome, in the core's terms.
pub(crate) fn insert_outcomes(o: Outcomes) -> Result<Vec<WriteOutcome>, StoreError> {
    match o {
        Outcomes::Inserted(v) => Ok(v
            .into_iter()
            .map(|o| match o {
                InsertOutcome::Inserted => WriteOutcome::Inserted,
                InsertOutcome::Duplicate => WriteOutcome::Duplicate,
                InsertOutcome::Equivocation { .. } => WriteOutcome::Equivocation,
            })
            .collect()),
        _ => Err(corrupt("other outcomes to an insert")),
    }
}

/// A batch of records and nothing else (no side tables, no declined
/// slots): one writer submission is all it takes.
pub(crate) fn records_only(b: &PersistBatch) -> bool {
    !b.records.is_empty()
        && b.declined.is_empty()
        && b.insights.is_empty()
        && b.reputation.is_empty()
        && b.own_seq.is_none()
}

/// Check signatures: signers decoded once per key (cached), then one batch
/// verification.
pub(crate) fn verify(
    cache: &Mutex<KeyCache>,
    records: &[SignedRecord],
) -> Vec<Result<PeerId, RecordError>> {
    let keys = {
        let mut c = cache.lock().unwrap_or_else(|p| p.into_inner());
        c.resolve(records)
    };
    verify_resolved(records, &keys)
}
