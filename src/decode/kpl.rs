//! Records aggregated by the Kinesis Producer Library: one Kinesis record holding many user
//! records. Such a record's data is the magic bytes `F3 89 9A C2`, a protobuf `AggregatedRecord`
//! and the MD5 of that protobuf. Each user record gets its index in the aggregate as its
//! sub-sequence number, as the KCL numbers them.

use md5::{Digest, Md5};
use prost::Message;

/// The first bytes of an aggregated record.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];

/// The length of the MD5 trailer.
const DIGEST_LEN: usize = 16;

/// The KPL's `AggregatedRecord` message.
#[derive(Clone, PartialEq, Message)]
struct AggregatedRecord {
    #[prost(string, repeated, tag = "1")]
    partition_key_table: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    explicit_hash_key_table: Vec<String>,
    #[prost(message, repeated, tag = "3")]
    records: Vec<Record>,
}

/// One user record of an aggregate.
#[derive(Clone, PartialEq, Message)]
struct Record {
    #[prost(uint64, required, tag = "1")]
    partition_key_index: u64,
    #[prost(uint64, optional, tag = "2")]
    explicit_hash_key_index: Option<u64>,
    #[prost(bytes = "vec", required, tag = "3")]
    data: Vec<u8>,
    #[prost(message, repeated, tag = "4")]
    tags: Vec<Tag>,
}

/// A tag of a user record (kept by the format, unused by consumers).
#[derive(Clone, PartialEq, Message)]
struct Tag {
    #[prost(string, required, tag = "1")]
    key: String,
    #[prost(string, optional, tag = "2")]
    value: Option<String>,
}

/// One user record taken out of an aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// Its index in the aggregate.
    pub sub_sequence: u64,
    /// Its partition key.
    pub partition_key: String,
    /// Its explicit hash key, when the producer gave one.
    pub explicit_hash_key: Option<String>,
    /// Its data.
    pub data: Vec<u8>,
}

/// Why an aggregated record could not be read: the whole record is one dead letter with this
/// reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KplError {
    /// Shorter than the magic bytes and the checksum.
    #[error("a KPL aggregated record of {0} bytes is too short to hold its checksum")]
    TooShort(usize),
    /// The MD5 trailer does not match the body.
    #[error("a KPL aggregated record whose MD5 checksum does not match its body (damaged)")]
    Checksum,
    /// The body is not an `AggregatedRecord`.
    #[error("a KPL aggregated record whose body is not a valid AggregatedRecord: {0}")]
    Protobuf(String),
    /// A user record names a key the aggregate's tables do not have.
    #[error(
        "a KPL aggregated record whose user record {index} names {table} entry {entry}, which does not exist"
    )]
    Index {
        /// The user record.
        index: usize,
        /// `partition key` or `explicit hash key`.
        table: &'static str,
        /// The missing entry.
        entry: u64,
    },
}

/// Whether a record's data is a KPL aggregate.
pub fn is_aggregated(data: &[u8]) -> bool {
    data.starts_with(&MAGIC)
}

/// One aggregated record holding `users` (partition key, explicit hash key, data), as the KPL
/// writes it: each key once in its table, in order of first use. For the emulator and tests.
pub fn aggregate(users: &[(String, Option<String>, Vec<u8>)]) -> Vec<u8> {
    fn index_of(table: &mut Vec<String>, key: &str) -> u64 {
        let at = table.iter().position(|k| k == key).unwrap_or_else(|| {
            table.push(key.to_owned());
            table.len() - 1
        });
        at as u64
    }
    let mut aggregate = AggregatedRecord::default();
    for (partition_key, explicit_hash_key, data) in users {
        let record = Record {
            partition_key_index: index_of(&mut aggregate.partition_key_table, partition_key),
            explicit_hash_key_index: explicit_hash_key
                .as_deref()
                .map(|k| index_of(&mut aggregate.explicit_hash_key_table, k)),
            data: data.clone(),
            tags: Vec::new(),
        };
        aggregate.records.push(record);
    }
    let body = aggregate.encode_to_vec();
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&body);
    out.extend_from_slice(&Md5::digest(&body));
    out
}

/// The user records of an aggregated record, in order (`data` must start with [`MAGIC`]).
pub fn deaggregate(data: &[u8]) -> Result<Vec<UserRecord>, KplError> {
    if data.len() < MAGIC.len() + DIGEST_LEN {
        return Err(KplError::TooShort(data.len()));
    }
    let (body, digest) = data[MAGIC.len()..].split_at(data.len() - MAGIC.len() - DIGEST_LEN);
    if Md5::digest(body).as_slice() != digest {
        return Err(KplError::Checksum);
    }
    let aggregate =
        AggregatedRecord::decode(body).map_err(|e| KplError::Protobuf(e.to_string()))?;
    let entry = |table: &'static [u8], values: &[String], index: usize, entry: u64| {
        usize::try_from(entry)
            .ok()
            .and_then(|i| values.get(i))
            .cloned()
            .ok_or(KplError::Index {
                index,
                table: if table == b"p" {
                    "partition key"
                } else {
                    "explicit hash key"
                },
                entry,
            })
    };
    aggregate
        .records
        .into_iter()
        .enumerate()
        .map(|(index, record)| {
            let partition_key = entry(
                b"p",
                &aggregate.partition_key_table,
                index,
                record.partition_key_index,
            )?;
            let explicit_hash_key = record
                .explicit_hash_key_index
                .map(|i| entry(b"e", &aggregate.explicit_hash_key_table, index, i))
                .transpose()?;
            Ok(UserRecord {
                sub_sequence: index as u64,
                partition_key,
                explicit_hash_key,
                data: record.data,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{KplError, deaggregate, is_aggregated};

    /// The user records a fixture's `.jsonl` lists: partition key, explicit hash key, data.
    fn expected(jsonl: &str) -> Vec<(String, Option<String>, Vec<u8>)> {
        jsonl
            .lines()
            .map(|line| {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                (
                    v["partition_key"].as_str().unwrap().to_owned(),
                    v["explicit_hash_key"].as_str().map(str::to_owned),
                    v["data"].as_str().unwrap().as_bytes().to_vec(),
                )
            })
            .collect()
    }

    fn read(bin: &[u8]) -> Vec<(String, Option<String>, Vec<u8>)> {
        let records = deaggregate(bin).unwrap();
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r.sub_sequence, i as u64);
        }
        records
            .into_iter()
            .map(|r| (r.partition_key, r.explicit_hash_key, r.data))
            .collect()
    }

    #[test]
    fn records_of_the_reference_aggregator_come_out_in_order() {
        let pins = include_bytes!("../../tests/fixtures/kpl/pins40.bin");
        assert!(is_aggregated(pins));
        let users = read(pins);
        assert_eq!(users.len(), 40);
        assert_eq!(
            users,
            expected(include_str!("../../tests/fixtures/kpl/pins40.jsonl"))
        );
        let keyed = include_bytes!("../../tests/fixtures/kpl/hash_keys.bin");
        let keyed_users = expected(include_str!("../../tests/fixtures/kpl/hash_keys.jsonl"));
        assert_eq!(read(keyed), keyed_users);
        // The emulator's aggregates are the reference aggregator's, byte for byte.
        assert_eq!(super::aggregate(&keyed_users), keyed.to_vec());
        let pin_users = expected(include_str!("../../tests/fixtures/kpl/pins40.jsonl"));
        assert_eq!(super::aggregate(&pin_users), pins.to_vec());
        assert!(!is_aggregated(br#"{"index": 1}"#));
    }

    #[test]
    fn a_damaged_aggregate_is_refused_with_the_reason() {
        let good = include_bytes!("../../tests/fixtures/kpl/hash_keys.bin").to_vec();
        let mut flipped = good.clone();
        flipped[10] ^= 0x01;
        assert_eq!(deaggregate(&flipped), Err(KplError::Checksum));
        assert_eq!(deaggregate(&good[..12]), Err(KplError::TooShort(12)));
        // A body that is not protobuf, with a checksum that matches it.
        let body = b"\xff\xff\xff not protobuf";
        let mut forged = super::MAGIC.to_vec();
        forged.extend_from_slice(body);
        forged.extend_from_slice(&<md5::Md5 as md5::Digest>::digest(body));
        assert!(matches!(deaggregate(&forged), Err(KplError::Protobuf(_))));
    }
}
