//! Shard discovery (ListShards, all pages) and the order rule: a child shard is read only after
//! every parent it has is read to its end, so records of one partition key stay in order across a
//! reshard.

use std::collections::BTreeMap;

use super::KinesisClient;
use super::error::{ErrorClass, SourceError, classify};

/// What the engine needs to know of one shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    /// The shard id.
    pub shard_id: String,
    /// `ParentShardId`, set on shards made by a split or merge.
    pub parent: Option<String>,
    /// `AdjacentParentShardId`, set on shards made by a merge.
    pub adjacent_parent: Option<String>,
    /// The shard's first sequence number: it differs between two incarnations of a stream.
    pub starting_sequence: Option<String>,
    /// The shard is closed (it has an ending sequence number): it takes no more records.
    pub closed: bool,
    /// The hash keys it holds, `first..=last` (when the listing says).
    pub hash_range: Option<(u128, u128)>,
}

impl ShardInfo {
    /// The parents of this shard.
    pub fn parents(&self) -> impl Iterator<Item = &str> {
        self.parent
            .iter()
            .chain(&self.adjacent_parent)
            .map(String::as_str)
    }
}

/// Lists every shard of a stream, following `NextToken`.
///
/// Returns `Ok(None)` when the call failed in a way worth retrying (the caller backs off).
pub async fn list_shards(
    client: &KinesisClient,
    stream: &str,
) -> Result<Option<Vec<ShardInfo>>, SourceError> {
    let mut shards = Vec::new();
    let mut next_token: Option<String> = None;
    loop {
        let request = match &next_token {
            Some(token) => client.list_shards().next_token(token),
            None => client.list_shards().stream_name(stream),
        };
        let page = match request.send().await {
            Ok(page) => page,
            Err(err) => {
                return match classify(&err) {
                    ErrorClass::Throttled | ErrorClass::Unavailable => {
                        tracing::warn!(stream, error = %super::error::summary(&err), "ListShards failed; retrying");
                        Ok(None)
                    }
                    ErrorClass::NotFound => Err(SourceError::StreamNotFound {
                        stream: stream.to_owned(),
                    }),
                    _ => Err(SourceError::call("ListShards", stream, None, &err)),
                };
            }
        };
        shards.extend(page.shards().iter().map(|s| {
            ShardInfo {
                shard_id: s.shard_id().to_owned(),
                parent: s.parent_shard_id().map(str::to_owned),
                adjacent_parent: s.adjacent_parent_shard_id().map(str::to_owned),
                starting_sequence: s
                    .sequence_number_range()
                    .map(|r| r.starting_sequence_number().to_owned()),
                closed: s
                    .sequence_number_range()
                    .is_some_and(|r| r.ending_sequence_number().is_some()),
                hash_range: s.hash_key_range().and_then(|r| {
                    Some((
                        r.starting_hash_key().parse().ok()?,
                        r.ending_hash_key().parse().ok()?,
                    ))
                }),
            }
        }));
        next_token = page.next_token().map(str::to_owned);
        if next_token.is_none() {
            return Ok(Some(shards));
        }
    }
}

/// The shards that may be read now: not finished, and every parent that is still listed finished.
///
/// A parent no longer listed has aged out of the stream's retention, so nothing of it is left to read.
pub fn readable_shards<'a>(
    shards: &'a [ShardInfo],
    finished: &BTreeMap<String, bool>,
) -> Vec<&'a ShardInfo> {
    let listed = |id: &str| shards.iter().any(|s| s.shard_id == id);
    let is_finished = |id: &str| finished.get(id).copied().unwrap_or(false);
    shards
        .iter()
        .filter(|s| !is_finished(&s.shard_id))
        .filter(|s| s.parents().all(|p| !listed(p) || is_finished(p)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(id: &str, parent: Option<&str>, adjacent: Option<&str>) -> ShardInfo {
        ShardInfo {
            shard_id: id.into(),
            parent: parent.map(Into::into),
            adjacent_parent: adjacent.map(Into::into),
            starting_sequence: None,
            closed: false,
            hash_range: None,
        }
    }

    fn ids(shards: Vec<&ShardInfo>) -> Vec<&str> {
        shards.into_iter().map(|s| s.shard_id.as_str()).collect()
    }

    #[test]
    fn children_wait_for_every_parent() {
        // 0 and 1 merge into 3; 2 splits into 4 and 5.
        let shards = vec![
            shard("0", None, None),
            shard("1", None, None),
            shard("2", None, None),
            shard("3", Some("0"), Some("1")),
            shard("4", Some("2"), None),
            shard("5", Some("2"), None),
        ];
        let mut finished = BTreeMap::new();
        assert_eq!(ids(readable_shards(&shards, &finished)), ["0", "1", "2"]);
        finished.insert("0".to_owned(), true);
        finished.insert("2".to_owned(), true);
        assert_eq!(ids(readable_shards(&shards, &finished)), ["1", "4", "5"]);
        finished.insert("1".to_owned(), true);
        assert_eq!(ids(readable_shards(&shards, &finished)), ["3", "4", "5"]);
    }

    #[test]
    fn a_parent_gone_from_the_listing_does_not_block() {
        let shards = vec![shard("7", Some("expired"), None)];
        assert_eq!(ids(readable_shards(&shards, &BTreeMap::new())), ["7"]);
    }
}
