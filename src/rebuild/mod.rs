//! `kinesis-delta rebuild STREAM`: the stream's table (and its dead letters) derived again from
//! its raw table with the current schema file and cleaning SQL, as one new table version
//! (`doc/DESIGN.md`, "Rebuilding a table from its raw table").
//!
//! * **Which records.** Those of every plan the table records, and no other: each raw row carries
//!   the plan that committed it, and the table's `txn` of each shard says which plans it holds. A
//!   plan the raw table holds and the table does not yet is left to the engine, so the
//!   checkpoints are not touched.
//! * **One atomic version**, made only as the very next version of the one read: when an engine
//!   committed a batch (or a compaction ran) meanwhile, the table is read again, the plans it
//!   added are derived too, and the commit is tried again.
//! * **Dead letters.** Only when the schema file now splits the records differently is the
//!   dead-letter table replaced too, in a second commit; a mark in the table's `_kinesis_delta`
//!   folder says a rebuild is between the two, and the engine does not start until a rebuild run
//!   again has finished it.
//! * **Only from the start.** The raw table must hold every plan of the table: it says, from its
//!   creation, after which plans it started.

mod dead_letters;
mod derivation;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::Utc;

use self::dead_letters::DeadLetterTable;
use self::derivation::Derivation;
use crate::config::{ConfigError, Pipeline};
use crate::lease::LeaseWorker;
use crate::pipeline::{EngineError, RAW_STARTS_AFTER};
use crate::query::RecordTable;
use crate::query::records::PlanCounts;
use crate::sink::{
    DeltaSink, KEEP_COMMITTED, ManifestLog, RebuildMark, ShardPlanLog, shard_app_id, shard_of,
};

/// How long a commit (the table's, the dead letters') is tried again while other commits keep
/// coming first (each attempt of the table's derives only the plans committed since the last).
pub(super) const COMMIT_PATIENCE: Duration = Duration::from_secs(120);

/// How long a rebuild that moves records between the tables waits for a half-committed plan
/// (an engine between its commits) to be committed.
const PENDING_PATIENCE: Duration = Duration::from_secs(10);

/// How far a rebuild is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RebuildProgress {
    /// Raw records derived so far.
    pub records: u64,
    /// Raw records of the plans the table records.
    pub total: u64,
}

/// What a rebuild did.
#[derive(Debug, Clone, Default)]
pub struct Rebuilt {
    /// The table version that holds the rebuilt rows.
    pub table_version: i64,
    /// The dead-letter table's new version, when the split changed and it was replaced.
    pub dead_letter_version: Option<i64>,
    /// Raw records derived.
    pub records: u64,
    /// Rows of the rebuilt table.
    pub rows: u64,
    /// Dead letters among the records.
    pub dead_letters: u64,
    /// The plan of each shard the rebuilt table holds (its checkpoint, unchanged).
    pub plans: BTreeMap<String, i64>,
    /// Commits tried (more than one when engines committed meanwhile).
    pub attempts: u32,
}

/// Derives `stream`'s table again from its raw table (see the module docs), telling `progress`
/// as it goes.
pub async fn rebuild(
    pipeline: &Pipeline,
    stream: &str,
    progress: &mut (dyn FnMut(RebuildProgress) + Send),
) -> Result<Rebuilt, EngineError> {
    let spec = pipeline.stream(stream)?;
    let raw_uri = spec.raw_table("rebuild")?;
    let app_id = spec.app_id(&pipeline.name);
    let storage = &pipeline.storage;
    let mut table = DeltaSink::open_with(&spec.table_uri, &app_id, storage).await?;
    if !table.exists() {
        return Err(refused(format!(
            "there is no table at {} yet: nothing to rebuild (run the engine first)",
            spec.table_uri
        )));
    }
    let raw = DeltaSink::open_with(raw_uri, &app_id, storage).await?;
    check_raw_covers_the_table(&raw, &mut table, raw_uri).await?;
    let owner = LeaseWorker::unique_id(&LeaseWorker::host_name());
    let mut run = Rebuild {
        manifests: ManifestLog::new(table.object_store(), &pipeline.name, &spec.stream),
        plan_log: ShardPlanLog::new(table.object_store(), &pipeline.name, &spec.stream),
        derivation: Derivation::new(spec, &table, &owner).await?,
        dead_letters: DeadLetterTable::new(
            DeltaSink::open_with(&spec.dead_letter_uri, &app_id, storage).await?,
            raw_uri,
            storage,
        ),
        table,
        raw,
        raw_uri,
        storage,
        app_id: app_id.clone(),
        stream: spec.stream.clone(),
        owner,
        marked: false,
    };
    let interrupted = run.manifests.rebuild_mark().await?.is_some();
    if interrupted {
        tracing::info!(stream, "finishing a rebuild that did not end");
    }
    let committed = match run.commit_table(interrupted, progress).await {
        Ok(committed) => committed,
        Err(e) => {
            // With nothing committed, a mark of this run would stop the engine for nothing (one
            // it took over from a rebuild that stopped between its commits stays, and so does
            // this run's if its table commit was made, or that cannot be told).
            if run.marked
                && !interrupted
                && matches!(run.table.committed_as(&run.derivation.rows).await, Ok(None))
            {
                run.manifests.clear_rebuild_mark(&run.owner).await?;
            }
            return Err(e);
        }
    };
    let dead_letter_version = if committed.moves_records {
        let derivation = &run.derivation;
        Some(
            run.dead_letters
                .replace(&derivation.dead_letters, &committed.plans, |rows| {
                    derivation.commit_info(&committed.plans, committed.from_version, rows)
                })
                .await?,
        )
    } else {
        None
    };
    if run.marked {
        run.manifests.clear_rebuild_mark(&run.owner).await?;
    }
    Ok(Rebuilt {
        table_version: committed.version,
        dead_letter_version,
        records: run.derivation.records,
        rows: run.derivation.rows.rows(),
        dead_letters: run.derivation.dead_letter_count(),
        plans: committed.plans,
        attempts: committed.attempts,
    })
}

/// A refusal the user can act on.
pub(super) fn refused(message: String) -> EngineError {
    EngineError::Config(ConfigError::Invalid(message))
}

/// The raw table must hold every plan the table records: created before the table held any (it
/// records where it started), and the table holding no batch of an earlier version.
async fn check_raw_covers_the_table(
    raw: &DeltaSink,
    table: &mut DeltaSink,
    raw_uri: &str,
) -> Result<(), EngineError> {
    if !raw.exists() {
        return Err(refused(format!(
            "there is no raw table at {raw_uri} yet: it is created by the engine's first batch after `raw_table` is set"
        )));
    }
    let started_after: BTreeMap<String, i64> = raw
        .table_property(RAW_STARTS_AFTER)
        .and_then(|text| serde_json::from_str(&text).ok())
        .ok_or_else(|| {
            refused(format!(
                "the raw table {raw_uri} does not say where it started (it was made by an earlier version): rebuild cannot tell whether it holds every record of the table"
            ))
        })?;
    if let Some((id, plan)) = started_after.iter().next() {
        return Err(refused(format!(
            "the raw table {raw_uri} lacks records of batches the table holds (of `{id}` up to plan {plan}; {} in all): it was turned on after the table held batches, or was off for a while, so a rebuild would lose their rows. A rebuild needs a raw table kept from the table's first batch: to get one, write to a new table with a new raw table (they start from the oldest records Kinesis still holds)",
            started_after.len()
        )));
    }
    if let Some(batch) = table.committed_batch().await? {
        return Err(refused(format!(
            "the table {} holds batches of an earlier version (up to batch {batch}), before the raw table: a rebuild would lose their rows",
            table.uri()
        )));
    }
    Ok(())
}

/// A rebuild under way.
struct Rebuild<'a> {
    table: DeltaSink,
    raw: DeltaSink,
    raw_uri: &'a str,
    storage: &'a BTreeMap<String, String>,
    dead_letters: DeadLetterTable<'a>,
    manifests: ManifestLog,
    plan_log: ShardPlanLog,
    derivation: Derivation,
    /// The stream's transaction id, under which each shard's is.
    app_id: String,
    /// The Kinesis stream.
    stream: String,
    /// This run, named in the mark.
    owner: String,
    /// This run wrote the mark.
    marked: bool,
}

/// What the raw table was found to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RawHolds {
    /// Every plan with records the version read holds.
    Yes,
    /// Another commit pruned a plan file the check needed: the table is read again.
    TableMovedOn,
}

/// The table's rebuild commit.
struct TableCommitted {
    version: i64,
    /// The version it replaced.
    from_version: i64,
    /// Each shard's committed plan in it.
    plans: BTreeMap<String, i64>,
    /// The dead-letter table is to be replaced too.
    moves_records: bool,
    attempts: u32,
}

impl Rebuild<'_> {
    /// Derives the table's plans and commits them as the version after the one read, reading
    /// again while other commits come first. With `interrupted`, a rebuild stopped between its
    /// commits: the dead letters are replaced whatever the split.
    async fn commit_table(
        &mut self,
        interrupted: bool,
        progress: &mut (dyn FnMut(RebuildProgress) + Send),
    ) -> Result<TableCommitted, EngineError> {
        let started = Instant::now();
        let mut pending_since: Option<Instant> = None;
        for attempt in 1.. {
            let from_version = self.table.load_newest().await?.unwrap_or(0);
            // Listed after the table is loaded: a shard with a plan in it has its folder by then.
            let shards = self.plan_log.shards().await?;
            let ids: Vec<String> = shards
                .iter()
                .map(|s| shard_app_id(&self.app_id, s))
                .collect();
            let by_id = self.table.loaded_recorded(&ids).await?;
            let plans = self.by_shard(&by_id);
            // Read after the table: every plan it records has its raw rows there. The raw table's
            // plans before its rows: a plan it records is then in the rows read.
            let raw_recorded = self.raw.recorded(&ids).await?;
            let in_raw = self.by_shard(&raw_recorded);
            let raw_rows = RecordTable::open(self.raw_uri, None, self.storage).await?;
            let counts = raw_rows.plan_counts().await?;
            if self.check_raw_holds(&counts, &in_raw, &plans).await? == RawHolds::TableMovedOn {
                continue;
            }
            self.derivation
                .extend(&raw_rows, &counts, &plans, progress)
                .await?;
            let moves_records = interrupted
                || self
                    .dead_letters
                    .split_changed(&self.derivation.dead_letters, &plans)
                    .await?;
            if moves_records {
                if let Some((id, plan)) = self.half_committed(&ids, &by_id).await? {
                    let since = *pending_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > PENDING_PATIENCE {
                        return Err(refused(format!(
                            "the schema file now makes other records dead letters, and plan {plan} of `{id}` is half committed (an engine is between its commits, or stopped there): its dead letters were split by the schema it was planned with. Finish it first: with the schema file as it was, run the engine (`run --available-now`), then edit it again and rebuild"
                        )));
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                if !self.marked {
                    let mark = RebuildMark {
                        started_at: Utc::now(),
                        owner: self.owner.clone(),
                    };
                    if !self.manifests.mark_rebuild(&mark, interrupted).await? {
                        return Err(refused(
                            "another rebuild of this stream began meanwhile: run one at a time (the engine will not start until it has ended)".to_owned(),
                        ));
                    }
                    self.marked = true;
                }
            }
            let info =
                self.derivation
                    .commit_info(&plans, from_version, self.derivation.rows.rows());
            if let Some(version) = self.table.replace(&mut self.derivation.rows, info).await? {
                return Ok(TableCommitted {
                    version,
                    from_version,
                    plans,
                    moves_records,
                    attempts: attempt,
                });
            }
            if started.elapsed() > COMMIT_PATIENCE {
                break;
            }
            tracing::info!(attempt, "another commit came first; deriving its plans too");
        }
        Err(refused(format!(
            "other commits to {} kept coming first for {COMMIT_PATIENCE:?} while the rebuild was committing (an engine committing many batches a second, or compactions): stop the engine and run rebuild again",
            self.table.uri()
        )))
    }

    /// The raw table (its rows per plan: `counts`) must hold every plan with records the table
    /// records (`plans`): of each shard's last [`KEEP_COMMITTED`] plans, those the raw table lacks
    /// must have taken no record (their plan files say) or committed none (their commits say).
    /// One that did was committed by a process without the raw table (earlier ones are noted at
    /// the next engine start, see `rawStartsAfter`).
    async fn check_raw_holds(
        &self,
        counts: &PlanCounts,
        in_raw: &BTreeMap<String, i64>,
        plans: &BTreeMap<String, i64>,
    ) -> Result<RawHolds, EngineError> {
        if let Some((shard, _)) = counts.iter().find(|(_, plans)| plans.contains_key(&0)) {
            return Err(refused(format!(
                "the raw table has rows of {shard} without a plan number (written by an earlier version): rebuild cannot tell which batches they belong to"
            )));
        }
        for (shard, &last) in plans {
            let held = counts.get(shard);
            for plan in (last - KEEP_COMMITTED + 1).max(1)..=last {
                if held.is_some_and(|h| h.contains_key(&plan)) {
                    continue;
                }
                // A plan file with no range took no record.
                let took_records = match self.plan_log.get(shard, plan).await? {
                    Some(file) => file.range.is_some(),
                    // Pruned by a commit after the version read: read it again.
                    None if self.committed_since(shard, last).await? => {
                        return Ok(RawHolds::TableMovedOn);
                    }
                    None => true,
                };
                // The raw table's newest plan of the shard, with no rows: it committed none of
                // its records (they were gone, under `restart`). An older one: its table commit
                // says so. Either way nothing of it is lost.
                let committed_none = in_raw.get(shard) == Some(&plan)
                    || self
                        .table
                        .records_of_plan(&self.stream, shard, plan)
                        .await?
                        == Some(0);
                if took_records && !committed_none {
                    return Err(refused(format!(
                        "the table holds plan {plan} of {shard}, which took records, and the raw table {} has none of them: a process without the raw table committed it, so a rebuild would lose its rows. Give every process the raw table; a rebuild needs it from the table's first batch",
                        self.raw_uri
                    )));
                }
            }
        }
        Ok(RawHolds::Yes)
    }

    /// Whether the table's newest version records a plan of `shard` after `plan` (read apart
    /// from the version the rebuild is built on).
    async fn committed_since(&self, shard: &str, plan: i64) -> Result<bool, EngineError> {
        let id = shard_app_id(&self.app_id, shard);
        let mut newest = DeltaSink::open_with(self.table.uri(), &id, self.storage).await?;
        let recorded = newest.recorded(std::slice::from_ref(&id)).await?;
        Ok(recorded.get(&id).is_some_and(|&now| now > plan))
    }

    /// Each shard's plan, from the plans of its transaction id.
    fn by_shard(&self, by_id: &BTreeMap<String, i64>) -> BTreeMap<String, i64> {
        by_id
            .iter()
            .filter_map(|(id, plan)| Some((shard_of(&self.app_id, id)?.to_owned(), *plan)))
            .collect()
    }

    /// A plan the raw or dead-letter table records and the table (`by_id`) does not yet.
    async fn half_committed(
        &mut self,
        ids: &[String],
        by_id: &BTreeMap<String, i64>,
    ) -> Result<Option<(String, i64)>, EngineError> {
        let sides = [
            self.raw.recorded(ids).await?,
            self.dead_letters.sink.recorded(ids).await?,
        ];
        Ok(sides.iter().find_map(|side| {
            side.iter()
                .find(|(id, plan)| **plan > by_id.get(*id).copied().unwrap_or(0))
                .map(|(id, plan)| (id.clone(), *plan))
        }))
    }
}
