//! Where every shard of the pipeline stands, for `kinesis-delta leases`: its lease owner, its
//! committed plan and how far behind the stream's newest record it is.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::EngineError;
use super::leases::lease_key;
use crate::config::Pipeline;
use crate::lease::LeaseTable;
use crate::sink::{DeltaSink, ShardPlanLog, shard_app_id};
use crate::source::{KinesisClient, connect, connect_dynamodb, list_shards};

/// One shard's state.
#[derive(Debug, Clone, Serialize)]
pub struct ShardStatus {
    /// The Kinesis stream.
    pub stream: String,
    /// The shard.
    pub shard: String,
    /// The process holding its lease (`None`: free, or no `[leases]`).
    pub owner: Option<String>,
    /// Its committed plan (0: none yet).
    pub plan: i64,
    /// The last sequence number committed.
    pub last: Option<String>,
    /// Read to its end.
    pub finished: bool,
    /// When its committed plan was made.
    pub planned_at: Option<DateTime<Utc>>,
    /// How far its committed position is behind the shard's newest record, in milliseconds
    /// (Kinesis' `MillisBehindLatest`); `None` when Kinesis did not say.
    pub millis_behind: Option<i64>,
}

/// Where the shards' owners come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owners {
    /// The config has no `[leases]`: one process reads every shard.
    NoLeases,
    /// The config names a lease table that does not exist yet (no engine with `[leases]` has
    /// started); it is not created by reading.
    NoLeaseTable(String),
    /// Read from the lease table.
    LeaseTable,
}

/// Every listed shard of every stream of `pipeline`, with the shards the table has plans of, and
/// where their owners were read from. Nothing is written, in DynamoDB or in the tables.
pub async fn shard_status(pipeline: &Pipeline) -> Result<(Vec<ShardStatus>, Owners), EngineError> {
    let client = connect(&pipeline.kinesis).await;
    let mut owners = std::collections::BTreeMap::new();
    let owners_from = match &pipeline.leases {
        Some(settings) => {
            let dynamodb =
                connect_dynamodb(&pipeline.kinesis, settings.endpoint_url.as_deref()).await;
            match LeaseTable::existing(dynamodb, &settings.table).await? {
                Some(table) => {
                    owners.extend(
                        table
                            .list()
                            .await?
                            .into_iter()
                            .filter_map(|l| Some((l.key, l.owner?))),
                    );
                    Owners::LeaseTable
                }
                None => Owners::NoLeaseTable(settings.table.clone()),
            }
        }
        None => Owners::NoLeases,
    };
    let mut statuses = Vec::new();
    for spec in &pipeline.streams {
        let app_id = spec.app_id(&pipeline.name);
        let mut table = DeltaSink::open_with(&spec.table_uri, &app_id, &pipeline.storage).await?;
        let plans = ShardPlanLog::new(table.object_store(), &pipeline.name, &spec.stream);
        let mut shards: std::collections::BTreeSet<String> = list_shards(&client, &spec.stream)
            .await?
            .unwrap_or_default()
            .into_iter()
            .map(|s| s.shard_id)
            .collect();
        shards.extend(plans.shards().await?);
        let ids: Vec<String> = shards.iter().map(|s| shard_app_id(&app_id, s)).collect();
        let recorded = table.recorded(&ids).await?;
        for (shard, id) in shards.into_iter().zip(ids) {
            let plan = recorded.get(&id).copied().unwrap_or(0);
            let committed = if plan > 0 {
                plans.get(&shard, plan).await?
            } else {
                None
            };
            let last = committed
                .as_ref()
                .and_then(|p| p.position.last.as_ref().map(|s| s.as_str().to_owned()));
            let finished = committed.as_ref().is_some_and(|p| p.position.finished);
            let millis_behind = if finished {
                Some(0)
            } else {
                behind(&client, &spec.stream, &shard, last.as_deref()).await
            };
            statuses.push(ShardStatus {
                owner: owners
                    .get(&lease_key(&pipeline.name, &spec.stream, &shard))
                    .cloned(),
                stream: spec.stream.clone(),
                planned_at: committed.as_ref().map(|p| p.planned_at),
                shard,
                plan,
                last,
                finished,
                millis_behind,
            });
        }
    }
    Ok((statuses, owners_from))
}

/// `MillisBehindLatest` of one GetRecords call of one record after `last` (from the shard's
/// oldest record without one).
async fn behind(
    client: &KinesisClient,
    stream: &str,
    shard: &str,
    last: Option<&str>,
) -> Option<i64> {
    use aws_sdk_kinesis::types::ShardIteratorType;
    let request = client
        .get_shard_iterator()
        .stream_name(stream)
        .shard_id(shard);
    let request = match last {
        Some(sequence) => request
            .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
            .starting_sequence_number(sequence),
        None => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
    };
    let iterator = request.send().await.ok()?.shard_iterator?;
    let answer = client
        .get_records()
        .shard_iterator(iterator)
        .limit(1)
        .send()
        .await
        .ok()?;
    answer.millis_behind_latest
}
