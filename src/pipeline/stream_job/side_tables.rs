//! The side tables of a stream: its dead letters and, when kept, its raw records. Each is
//! committed per plan under the shard's transaction id, before the table, and holds only plans the
//! table does not record yet; at start-up both are checked to belong to the table, and where the
//! raw table starts (the plans it lacks) is recorded in it for `rebuild`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

use super::StreamJob;
use crate::config::{ConfigError, MaintenanceSettings};
use crate::decode::raw_records_schema;
use crate::pipeline::EngineError;
use crate::pipeline::maintenance::Maintainer;
use crate::sink::{CommitInfo, DeltaSink, EngineCommit, Numbering, PlanCommit, PlanRows};

/// The raw table's property that says after which plan of each shard (and which stream-level
/// batch of an earlier version) of the table it starts: `{}` when it holds every plan.
pub const RAW_STARTS_AFTER: &str = "kinesisDelta.rawStartsAfter";

/// What one side-table commit did.
#[derive(Debug, Default)]
pub(super) struct SideCommitted {
    pub write: Duration,
    pub commit: Duration,
    /// The rows it committed.
    pub rows: usize,
}

/// One side table of the stream and its maintenance.
#[derive(Debug)]
pub(super) struct SideTable {
    pub sink: DeltaSink,
    maintenance: Maintainer,
}

impl SideTable {
    pub fn new(sink: DeltaSink, settings: &MaintenanceSettings) -> Self {
        Self {
            sink,
            maintenance: Maintainer::new(settings),
        }
    }

    /// Commits the `plans` the table does not hold yet (`recorded`: the table's plan of each
    /// transaction id). A plan the table holds had its side rows committed with it, or is a
    /// lagging worker's stale plan: never committed again. The side table's numbers have gaps
    /// (plans with no side rows are not in it, but for [`Self::record_without_rows`]).
    pub async fn commit(
        &mut self,
        schema: &SchemaRef,
        mut plans: Vec<PlanRows>,
        recorded: &BTreeMap<String, i64>,
        info: &(dyn Fn(&[&str]) -> CommitInfo + Sync),
    ) -> Result<SideCommitted, EngineError> {
        plans.retain(|p| recorded.get(&p.app_id).is_none_or(|&r| r < p.version));
        if plans.is_empty() {
            return Ok(SideCommitted::default());
        }
        let done = self
            .sink
            .commit_plans_with(schema, &plans, Numbering::Gaps, info)
            .await?;
        let rows = plans
            .iter()
            .filter(|p| done.committed.contains(&p.app_id))
            .flat_map(|p| p.rows.iter().map(RecordBatch::num_rows))
            .sum();
        Ok(SideCommitted {
            write: done.write,
            commit: done.commit,
            rows,
        })
    }

    /// Records `plans`, which the table's commit just recorded with none of their records (they
    /// were gone, under `restart`), with no rows: the raw table's checks then know they lack
    /// nothing, however old the table's commit of them gets. Made after the table's commit, so
    /// that only a commit that held no records vouches; a plan the raw table recorded first (from
    /// another process's read, with its rows) keeps that.
    pub async fn record_without_rows(
        &mut self,
        plans: Vec<PlanRows>,
        info: &(dyn Fn(&[&str]) -> CommitInfo + Sync),
    ) -> Result<SideCommitted, EngineError> {
        if plans.is_empty() {
            return Ok(SideCommitted::default());
        }
        let done = self
            .sink
            .commit_plans_with(&raw_records_schema(), &plans, Numbering::Gaps, info)
            .await?;
        Ok(SideCommitted {
            write: done.write,
            commit: done.commit,
            rows: 0,
        })
    }

    /// Maintenance between the stream's commits, after one that added rows here.
    pub async fn after_commit(&mut self) {
        self.maintenance.after_commit(&mut self.sink, 1).await;
    }

    /// Maintenance when the stream stops.
    pub async fn at_stop(&mut self) {
        self.maintenance.at_stop(&mut self.sink).await;
    }
}

impl StreamJob {
    /// The side tables record each shard's plans under the same ids as the table and are
    /// committed before it: neither may be ahead of it but by the plan still pending (a batch
    /// stopped between its commits). One that is belonged to another table (the config named a
    /// new table and kept it): its plan numbers would drop this table's dead letters or raw
    /// records, and then repeat older ones.
    pub(super) async fn check_side_tables(&mut self) -> Result<(), EngineError> {
        let shards = self.known_shards().await?;
        let app_ids: Vec<String> = shards.iter().map(|s| self.shard_app_id(s)).collect();
        // The side tables are read before the table, which is committed after them: another
        // engine committing meanwhile can only put the table further ahead, never a side table.
        let mut sides = vec![(
            self.dead_letters.sink.recorded(&app_ids).await?,
            self.dead_letters.sink.uri().to_owned(),
            "dead_letter_table",
        )];
        if let Some(raw) = &mut self.raw {
            sides.push((
                raw.sink.recorded(&app_ids).await?,
                raw.sink.uri().to_owned(),
                "raw_table",
            ));
        }
        let table = self.table.recorded(&app_ids).await?;
        let stream_level = self.table.committed_batch().await?;
        self.record_raw_start(&shards, &app_ids, &table, stream_level)
            .await?;
        for (recorded, side_uri, key) in sides {
            let mut ahead = None;
            for (shard, id) in shards.iter().zip(&app_ids) {
                let (side_plan, table_plan) = (
                    recorded.get(id).copied().unwrap_or(0),
                    table.get(id).copied().unwrap_or(0),
                );
                // One ahead is a batch stopped between its commits: its plan is still pending.
                let pending = side_plan == table_plan + 1
                    && self.plans.get(shard, side_plan).await?.is_some();
                if side_plan > table_plan && !pending {
                    ahead = Some(id);
                    break;
                }
            }
            if let Some(id) = ahead {
                return Err(EngineError::Config(ConfigError::Invalid(format!(
                    "the {key} {} records plan {} of `{id}`, but the table {} only plan {}: it belonged to another table. Give this table its own {key} (a new folder name), or point `table` back at the table it belonged to",
                    side_uri,
                    recorded.get(id).copied().unwrap_or(0),
                    self.table.uri(),
                    table.get(id).copied().unwrap_or(0),
                ))));
            }
        }
        Ok(())
    }

    /// Where the raw table starts, for `rebuild`, which needs it from the table's first plan.
    /// For a raw table this process may create: after the plan each shard of the table (`table`,
    /// read just before) is at, and any batch of an earlier version. For one that exists: after
    /// a plan whose records the table committed and the raw table lacks (it was off for a
    /// while), recorded in its property with a commit of its own.
    async fn record_raw_start(
        &mut self,
        shards: &BTreeSet<String>,
        app_ids: &[String],
        table: &BTreeMap<String, i64>,
        stream_level: Option<i64>,
    ) -> Result<(), EngineError> {
        let Some(SideTable { sink: raw, .. }) = &mut self.raw else {
            return Ok(());
        };
        // A map of strings to numbers always serializes.
        let to_json = |map: &BTreeMap<String, i64>| serde_json::to_string(map).unwrap_or_default();
        if !raw.exists() {
            let mut starts_after: BTreeMap<String, i64> = table
                .iter()
                .filter(|(_, plan)| **plan > 0)
                .map(|(id, plan)| (id.clone(), *plan))
                .collect();
            if let Some(batch) = stream_level {
                starts_after.insert(self.app_id.clone(), batch);
            }
            raw.set_table_property(RAW_STARTS_AFTER, &to_json(&starts_after));
            return Ok(());
        }
        // Read after the table, which is committed after it: it holds every plan with records
        // the table holds, unless a process without it committed the plan.
        let in_raw = raw.recorded(app_ids).await?;
        let Some(mut starts_after) = raw
            .table_property(RAW_STARTS_AFTER)
            .and_then(|text| serde_json::from_str::<BTreeMap<String, i64>>(&text).ok())
        else {
            return Ok(()); // made by an earlier version: rebuild refuses it anyway
        };
        let stream = self.source.stream();
        let mut gaps = Vec::new();
        let mut unrecorded = BTreeMap::new();
        for (shard, id) in shards.iter().zip(app_ids) {
            let (raw_plan, table_plan) = (in_raw[id], table[id]);
            if starts_after.get(id).is_some_and(|&p| p >= table_plan) {
                continue;
            }
            let (mut gap, mut held_none) = (false, None);
            for plan in raw_plan + 1..=table_plan {
                // A plan with no range took no record (a pruned one cannot tell), and one whose
                // commit held none (its records gone, under `restart`) has none to lose.
                let took_records = self
                    .plans
                    .get(shard, plan)
                    .await?
                    .is_none_or(|p| p.range.is_some());
                if !took_records {
                    continue;
                }
                if self.table.records_of_plan(stream, shard, plan).await? != Some(0) {
                    gaps.push((id.clone(), table_plan));
                    gap = true;
                    break;
                }
                held_none = Some(plan);
            }
            // The newest plan that took records held none of them, and the raw table's record
            // of that (made after the table's commit) is missing: the process stopped in between.
            // Made now, while the table's commit can still say so.
            if let (false, Some(plan)) = (gap, held_none) {
                let plan = PlanCommit {
                    plan,
                    records: Some(0),
                    rows: Some(0),
                    ..PlanCommit::default()
                };
                unrecorded.insert(shard.clone(), (id.clone(), plan));
            }
        }
        if !unrecorded.is_empty() {
            let plans: Vec<PlanRows> = unrecorded
                .values()
                .map(|(id, plan)| PlanRows {
                    app_id: id.clone(),
                    version: plan.plan,
                    rows: Vec::new(),
                })
                .collect();
            let worker = &self.worker;
            let info = |kept: &[&str]| {
                let plans = unrecorded
                    .iter()
                    .filter(|(_, (id, _))| kept.contains(&id.as_str()))
                    .map(|(shard, (_, plan))| (shard.clone(), plan.clone()))
                    .collect();
                EngineCommit {
                    stream: Some(stream.to_owned()),
                    worker: Some(worker.clone()),
                    plans,
                    ..EngineCommit::default()
                }
                .commit_info()
            };
            // Only rebuild needs it: the next start tries again.
            let recorded = raw
                .commit_plans_with(&raw_records_schema(), &plans, Numbering::Gaps, &info)
                .await;
            if let Err(e) = recorded {
                tracing::warn!(error = %e, "could not record in the raw table the plans that held none of their records; the next start tries again");
            }
        }
        if gaps.is_empty() {
            return Ok(());
        }
        for (id, plan) in &gaps {
            tracing::warn!(shard = %id, plan, "the raw table lacks records of plans the table holds (it was off for a while, or a process without it committed them): rebuild will refuse it");
            starts_after.insert(id.clone(), *plan);
        }
        raw.commit_table_property(RAW_STARTS_AFTER, &to_json(&starts_after))
            .await?;
        Ok(())
    }
}
