//! The pipeline configuration: which streams, cleaned by which SQL, land in which Delta tables.
//!
//! One source of truth, in layers: the shipped `kinesis-delta.toml` is embedded in the binary as the
//! default; a `--config` file replaces it; command-line flags (and their environment variables,
//! declared in `cli`) override single values. [`PipelineConfig::validate`] turns the raw file into a
//! [`Pipeline`] before anything starts, so a bad value fails at start-up with the fix in the message.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;

mod leases;
mod maintenance;

pub use leases::LeaseSettings;
pub use maintenance::{MIN_VACUUM_RETENTION, MaintenanceSettings};

/// The shipped Pinterest pipeline, used when no `--config` is given.
pub const DEFAULT_CONFIG: &str = include_str!("../../kinesis-delta.toml");

/// The shipped SQL files, used by the built-in config when `./sql` does not hold them (the binary
/// run outside the repository). Files on disk always win: users edit SQL, not Rust.
const SHIPPED_SQL: [(&str, &str); 6] = [
    (
        "sql/pin.schema.sql",
        include_str!("../../sql/pin.schema.sql"),
    ),
    ("sql/pin.sql", include_str!("../../sql/pin.sql")),
    (
        "sql/geo.schema.sql",
        include_str!("../../sql/geo.schema.sql"),
    ),
    ("sql/geo.sql", include_str!("../../sql/geo.sql")),
    (
        "sql/user.schema.sql",
        include_str!("../../sql/user.schema.sql"),
    ),
    ("sql/user.sql", include_str!("../../sql/user.sql")),
];

/// A configuration that cannot run. Always the user's to fix; retrying does not help.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read the config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML does not match the expected shape.
    #[error("the config {origin} is not valid: {source}")]
    Parse {
        /// The file, or "(built-in)".
        origin: String,
        /// What TOML or serde said.
        source: toml::de::Error,
    },
    /// A value is out of range or inconsistent; the message says what to change.
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// The config file, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// `[pipeline]`: names and locations.
    pub pipeline: PipelineSection,
    /// `[kinesis]`: how to reach the streams.
    #[serde(default)]
    pub kinesis: KinesisSettings,
    /// `[engine]`: micro-batch policy.
    #[serde(default)]
    pub engine: EngineSettings,
    /// `[maintenance]`: compaction and vacuum of the tables.
    #[serde(default)]
    pub maintenance: MaintenanceSettings,
    /// `[leases]`: several processes share the shards (none: one process reads them all).
    #[serde(default)]
    pub leases: Option<LeaseSettings>,
    /// `[storage]`: object-store options for the table root, as delta-rs names them
    /// (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ALLOW_HTTP`, `AWS_PROFILE`, …).
    #[serde(default)]
    pub storage: BTreeMap<String, String>,
    /// `[[streams]]`: one entry per stream → table.
    pub streams: Vec<StreamConfig>,
    /// Loaded from the built-in default (the shipped SQL may then come from the binary).
    #[serde(skip)]
    pub builtin: bool,
}

/// `[pipeline]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSection {
    /// Names the pipeline in the Delta transaction ids.
    pub name: String,
    /// A local folder or an `s3://bucket/prefix` URL under which each table is a folder.
    pub table_root: String,
    /// Substituted for `{user_id}` in stream names.
    #[serde(default)]
    pub user_id: String,
}

/// `[kinesis]`: region, endpoint and where new shards start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KinesisSettings {
    /// AWS region.
    pub region: String,
    /// Overrides the Kinesis endpoint (a local server); `None` uses AWS (or the SDK's
    /// `AWS_ENDPOINT_URL_KINESIS` / `AWS_ENDPOINT_URL`).
    pub endpoint_url: Option<String>,
    /// An AWS profile name; `None` uses the default credential chain.
    pub profile: Option<String>,
    /// Where a shard without a checkpoint starts.
    pub initial_position: InitialPosition,
    /// The start time with `initial_position = "at_timestamp"`.
    pub initial_timestamp: Option<DateTime<Utc>>,
    /// How the shards are read.
    pub consumer_mode: ConsumerMode,
    /// With enhanced fan-out, the name the stream consumer is registered under (every process of
    /// the pipeline shares it); validation fills in `kinesis-delta-<pipeline>` when unset.
    pub consumer_name: Option<String>,
    /// With enhanced fan-out, deregister the consumer when the engine stops (it is billed while
    /// registered); otherwise it stays for the next start.
    pub deregister_consumer: bool,
}

/// How the shards are read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsumerMode {
    /// GetRecords calls, sharing each shard's 2 MiB/s and 5 calls/s with the stream's other readers.
    #[default]
    Polling,
    /// SubscribeToShard: a registered consumer gets its own 2 MiB/s per shard, pushed.
    EnhancedFanOut,
}

impl Default for KinesisSettings {
    fn default() -> Self {
        Self {
            region: "us-east-1".into(),
            endpoint_url: None,
            profile: None,
            initial_position: InitialPosition::TrimHorizon,
            initial_timestamp: None,
            consumer_mode: ConsumerMode::Polling,
            consumer_name: None,
            deregister_consumer: false,
        }
    }
}

impl KinesisSettings {
    /// Checks the enhanced fan-out settings and names the consumer after `pipeline` when the
    /// config does not.
    fn with_consumer_name(self, pipeline: &str) -> Result<Self, ConfigError> {
        if self.consumer_mode == ConsumerMode::Polling {
            if self.consumer_name.is_some() || self.deregister_consumer {
                return Err(ConfigError::Invalid(
                    "kinesis.consumer_name and kinesis.deregister_consumer apply to enhanced fan-out only: set kinesis.consumer_mode = \"enhanced_fan_out\", or remove them".into(),
                ));
            }
            return Ok(self);
        }
        let name = self
            .consumer_name
            .clone()
            .unwrap_or_else(|| format!("kinesis-delta-{pipeline}"));
        if !valid_stream_name(&name) {
            return Err(ConfigError::Invalid(format!(
                "kinesis.consumer_name `{name}` is not a Kinesis consumer name: 1 to 128 of a-z A-Z 0-9 _ . - (set kinesis.consumer_name to a shorter one)"
            )));
        }
        Ok(Self {
            consumer_name: Some(name),
            ..self
        })
    }
}

/// Where a shard without a checkpoint starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum InitialPosition {
    /// The oldest record the shard still holds.
    TrimHorizon,
    /// Only records put after the engine starts.
    Latest,
    /// Records put at or after `initial_timestamp`.
    AtTimestamp,
}

/// `[engine]`: when a micro-batch is cut.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSettings {
    /// How long a batch collects records while the shards are not caught up.
    #[serde(with = "humantime_serde")]
    pub trigger_interval: Duration,
    /// A batch is cut at this many records.
    pub max_batch_records: usize,
    /// A batch is cut at this many bytes of record data.
    pub max_batch_bytes: usize,
    /// GetRecords calls per second per shard (Kinesis allows 5 per shard, shared by all consumers).
    pub max_get_records_per_second: u32,
    /// What to do when a stream was recreated (or its server lost its data) since the checkpoint.
    pub on_lost_stream: LostStreamPolicy,
    /// How long `--available-now` waits for Kinesis to answer at start-up before it fails.
    #[serde(with = "humantime_serde")]
    pub startup_timeout: Duration,
    /// Bytes of memory that records fetched, buffered and in batches may take, across streams.
    #[serde(deserialize_with = "byte_size")]
    pub memory_budget: usize,
}

/// The smallest memory budget accepted: below it batches would hold a handful of records.
const MIN_MEMORY_BUDGET: usize = 16 << 20;

/// A size in bytes: a number, or a string such as `"128MiB"` (B, KiB, MiB, GiB).
fn byte_size<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<usize, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(usize),
        Text(String),
    }
    match Size::deserialize(deserializer)? {
        Size::Bytes(bytes) => Ok(bytes),
        Size::Text(text) => parse_byte_size(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "`{text}` is not a size: write a number of bytes, or a number with KiB, MiB or GiB, e.g. \"128MiB\""
            ))
        }),
    }
}

fn parse_byte_size(text: &str) -> Option<usize> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let unit_bytes: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    digits.parse::<usize>().ok()?.checked_mul(unit_bytes)
}

/// What the engine does when a stream is not the one its checkpoints were taken on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LostStreamPolicy {
    /// Stop with an error that explains the choice (the default: nothing is read or skipped).
    Stop,
    /// Read the new stream from its earliest record, with a warning; the table keeps its rows.
    Restart,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            trigger_interval: Duration::from_secs(2),
            max_batch_records: 100_000,
            max_batch_bytes: 64 * 1024 * 1024,
            max_get_records_per_second: 5,
            on_lost_stream: LostStreamPolicy::Stop,
            startup_timeout: Duration::from_secs(60),
            memory_budget: crate::source::DEFAULT_MEMORY_BUDGET,
        }
    }
}

/// `[[streams]]`: one Kinesis stream, its raw schema and cleaning SQL, and its table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    /// Short name (`pin`), used in progress lines.
    pub name: String,
    /// The Kinesis stream name; `{user_id}` is substituted.
    pub stream: String,
    /// A SQL file with one `CREATE TABLE raw (...)` declaring the record's JSON fields.
    pub schema: PathBuf,
    /// The cleaning query over the table `raw`.
    pub sql: PathBuf,
    /// The Delta table's folder name under `table_root`.
    pub table: String,
    /// The dead-letter table's folder name; default `<table>_dead_letters`.
    pub dead_letter_table: Option<String>,
    /// A table of every record's bytes and Kinesis metadata, as read (none: not kept).
    pub raw_table: Option<String>,
    /// What a record's data holds (gzip is recognised by itself).
    #[serde(default)]
    pub format: PayloadFormat,
}

/// What a stream's records hold, once any KPL aggregate is taken apart and any gzip undone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadFormat {
    /// One JSON object (the default).
    #[default]
    Json,
    /// JSON objects, one per line: each line is a row.
    JsonLines,
    /// A CloudWatch Logs subscription envelope: each log event is a row, with the envelope's
    /// fields; control messages are skipped.
    CloudwatchLogs,
}

/// A validated pipeline, ready to run: names resolved, files read, limits checked.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// The pipeline's name.
    pub name: String,
    /// Table root URL (`file:///…` or `s3://…`), without a trailing slash.
    pub table_root: String,
    /// Kinesis settings.
    pub kinesis: KinesisSettings,
    /// Engine settings.
    pub engine: EngineSettings,
    /// Table maintenance settings.
    pub maintenance: MaintenanceSettings,
    /// Shard leases shared with other processes, if configured.
    pub leases: Option<LeaseSettings>,
    /// Object-store options for the tables.
    pub storage: BTreeMap<String, String>,
    /// One entry per stream.
    pub streams: Vec<StreamSpec>,
}

/// One validated stream of a [`Pipeline`].
#[derive(Debug, Clone)]
pub struct StreamSpec {
    /// Short name.
    pub name: String,
    /// The Kinesis stream name, `{user_id}` substituted.
    pub stream: String,
    /// The schema file, for messages.
    pub schema_path: PathBuf,
    /// The schema file's text.
    pub schema_sql: String,
    /// The cleaning SQL file, for messages.
    pub sql_path: PathBuf,
    /// The cleaning SQL's text.
    pub sql: String,
    /// The table's URL.
    pub table_uri: String,
    /// The dead-letter table's URL.
    pub dead_letter_uri: String,
    /// The raw table's URL, when the stream keeps one.
    pub raw_uri: Option<String>,
    /// What its records hold.
    pub format: PayloadFormat,
}

impl Pipeline {
    /// Every table of the pipeline, its dead-letter table and its raw table (if any), as
    /// `(name, url)`: the name is the table's folder, as `query` and `maintain` know it.
    pub fn tables(&self) -> Vec<(String, String)> {
        self.streams
            .iter()
            .flat_map(|spec| {
                [&spec.table_uri, &spec.dead_letter_uri]
                    .into_iter()
                    .chain(spec.raw_uri.as_ref())
            })
            .map(|uri| (table_folder(uri).to_owned(), uri.clone()))
            .collect()
    }

    /// The stream the config names `name`; the error lists the names there are.
    pub fn stream(&self, name: &str) -> Result<&StreamSpec, ConfigError> {
        self.streams.iter().find(|s| s.name == name).ok_or_else(|| {
            let names: Vec<&str> = self.streams.iter().map(|s| s.name.as_str()).collect();
            ConfigError::Invalid(format!(
                "no stream `{name}` in the config: name one of {}",
                names.join(", ")
            ))
        })
    }
}

/// A table's name: the last folder of its URL (`pin`, `pin_dead_letters`).
pub fn table_folder(uri: &str) -> &str {
    let uri = uri.trim_end_matches('/');
    uri.rsplit('/').next().unwrap_or(uri)
}

impl StreamSpec {
    /// The raw table's URL, or an error that says how to keep one (`needed_for`: what the
    /// caller wanted it for).
    pub fn raw_table(&self, needed_for: &str) -> Result<&str, ConfigError> {
        self.raw_uri.as_deref().ok_or_else(|| {
            ConfigError::Invalid(format!(
                "stream `{}` keeps no raw table, which {needed_for} reads: add `raw_table = \"{}_raw\"` to its [[streams]] entry (it holds the records read from then on)",
                self.name, self.name
            ))
        })
    }

    /// The Delta transaction id of this stream's batches (`kinesis-delta/<pipeline>/<stream>`).
    pub fn app_id(&self, pipeline: &str) -> String {
        format!("kinesis-delta/{pipeline}/{}", self.stream)
    }
}

impl PipelineConfig {
    /// Reads a config file, or the built-in one when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<(Self, PathBuf), ConfigError> {
        match path {
            None => {
                let mut config = Self::parse(DEFAULT_CONFIG, "(built-in)")?;
                config.builtin = true;
                Ok((config, PathBuf::from(".")))
            }
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                let base = path
                    .parent()
                    .map(Path::to_path_buf)
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or_else(|| PathBuf::from("."));
                Ok((Self::parse(&text, &path.display().to_string())?, base))
            }
        }
    }

    /// Parses TOML text.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|source| ConfigError::Parse {
            origin: origin.to_owned(),
            source,
        })
    }

    /// Checks every value and reads the SQL files (relative paths against `base`).
    pub fn validate(self, base: &Path) -> Result<Pipeline, ConfigError> {
        let invalid = |msg: String| Err(ConfigError::Invalid(msg));
        let p = &self.pipeline;
        if p.name.is_empty()
            || !p
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return invalid(format!(
                "pipeline.name `{}` must be non-empty and use only letters, digits, `-`, `_` or `.`",
                p.name
            ));
        }
        let e = &self.engine;
        if e.max_batch_records == 0 || e.max_batch_bytes == 0 {
            return invalid(
                "engine.max_batch_records and engine.max_batch_bytes must be above 0".into(),
            );
        }
        if !(1..=5).contains(&e.max_get_records_per_second) {
            return invalid(format!(
                "engine.max_get_records_per_second is {}; Kinesis allows 1 to 5 GetRecords calls per second per shard",
                e.max_get_records_per_second
            ));
        }
        if e.startup_timeout.is_zero() {
            return invalid("engine.startup_timeout must be above 0 (for example \"60s\")".into());
        }
        if e.trigger_interval.is_zero() {
            return invalid("engine.trigger_interval must be above 0 (for example \"1s\")".into());
        }
        if e.memory_budget < MIN_MEMORY_BUDGET {
            return invalid(format!(
                "engine.memory_budget is {} bytes; give it at least \"16MiB\" (the default, \"128MiB\", suits most pipelines)",
                e.memory_budget
            ));
        }
        self.maintenance.validate().map_err(ConfigError::Invalid)?;
        if let Some(leases) = &self.leases {
            leases.validate().map_err(ConfigError::Invalid)?;
        }
        let k = &self.kinesis;
        if k.initial_position == InitialPosition::AtTimestamp && k.initial_timestamp.is_none() {
            return invalid(
                "kinesis.initial_position = \"at_timestamp\" needs kinesis.initial_timestamp (RFC 3339, e.g. \"2024-01-01T00:00:00Z\")".into(),
            );
        }
        if let Some(url) = &k.endpoint_url
            && url::Url::parse(url).is_err()
        {
            return invalid(format!(
                "kinesis.endpoint_url `{url}` is not a URL (e.g. http://127.0.0.1:4567)"
            ));
        }
        let kinesis = self.kinesis.with_consumer_name(&p.name)?;
        if kinesis.deregister_consumer && self.leases.is_some() {
            return invalid(
                "kinesis.deregister_consumer would cut the other processes' subscriptions whenever one of them stops: with [leases], leave it unset and deregister the consumer when the pipeline is retired (`aws kinesis deregister-stream-consumer`)".into(),
            );
        }
        if self.streams.is_empty() {
            return invalid("the config has no [[streams]]: add at least one".into());
        }
        let table_root = table_root_url(&p.table_root, base)?;
        let mut streams = Vec::with_capacity(self.streams.len());
        for s in self.streams {
            let stream = s.stream.replace("{user_id}", &p.user_id);
            if !valid_stream_name(&stream) {
                return invalid(format!(
                    "stream `{stream}` (of [[streams]] `{}`) is not a Kinesis stream name: 1 to 128 of a-z A-Z 0-9 _ . -",
                    s.name
                ));
            }
            for table in std::iter::once(&s.table)
                .chain(s.dead_letter_table.as_ref())
                .chain(s.raw_table.as_ref())
            {
                if table.is_empty() || table.contains(['/', '\\']) || table.starts_with(['.', '_'])
                {
                    return invalid(format!(
                        "table `{table}` of stream `{}` must be a plain folder name",
                        s.name
                    ));
                }
            }
            if streams
                .iter()
                .any(|o: &StreamSpec| o.name == s.name || o.stream == stream)
            {
                return invalid(format!(
                    "[[streams]] `{}` ({stream}) is listed twice",
                    s.name
                ));
            }
            let builtin = self.builtin;
            let read = |path: &Path| {
                let full = base.join(path);
                let shipped = SHIPPED_SQL
                    .iter()
                    .find(|(p, _)| builtin && Path::new(p) == path);
                if let (false, Some((_, text))) = (full.exists(), shipped) {
                    return Ok((path.to_path_buf(), (*text).to_owned()));
                }
                std::fs::read_to_string(&full).map(|text| (full.clone(), text)).map_err(|e| {
                    ConfigError::Invalid(format!(
                        "cannot read {} for stream `{}`: {e} (paths are relative to the config file)",
                        full.display(),
                        s.name
                    ))
                })
            };
            let (schema_path, schema_sql) = read(&s.schema)?;
            let (sql_path, sql) = read(&s.sql)?;
            let dead_letter = s
                .dead_letter_table
                .clone()
                .unwrap_or_else(|| format!("{}_dead_letters", s.table));
            streams.push(StreamSpec {
                table_uri: format!("{table_root}/{}", s.table),
                dead_letter_uri: format!("{table_root}/{dead_letter}"),
                raw_uri: s
                    .raw_table
                    .as_ref()
                    .map(|raw| format!("{table_root}/{raw}")),
                name: s.name,
                stream,
                schema_path,
                schema_sql,
                sql_path,
                sql,
                format: s.format,
            });
        }
        check_tables_distinct(&streams)?;
        Ok(Pipeline {
            name: p.name.clone(),
            table_root,
            kinesis,
            engine: self.engine,
            maintenance: self.maintenance,
            leases: self.leases,
            storage: self.storage,
            streams,
        })
    }
}

/// Every table and dead-letter table belongs to one stream: a table is the one place that records
/// which batches of its stream it holds, so two writers would each skip the other's batches.
fn check_tables_distinct(streams: &[StreamSpec]) -> Result<(), ConfigError> {
    // Compared without case: on a case-insensitive file system `pin` and `Pin` are one folder.
    let mut owners: BTreeMap<String, String> = BTreeMap::new();
    for s in streams {
        let tables = [
            (&s.table_uri, "table"),
            (&s.dead_letter_uri, "dead_letter_table"),
        ];
        let raw = s.raw_uri.as_ref().map(|uri| (uri, "raw_table"));
        for (uri, role) in tables.into_iter().chain(raw) {
            let owner = format!("the {role} of stream `{}`", s.name);
            if let Some(first) = owners.insert(uri.to_lowercase(), owner.clone()) {
                let folder = table_folder(uri);
                return Err(ConfigError::Invalid(format!(
                    "table `{folder}` is both {first} and {owner}: give each stream its own table and dead_letter_table (the dead-letter table defaults to `<table>_dead_letters`)"
                )));
            }
        }
    }
    Ok(())
}

/// Kinesis stream names: 1–128 of `[a-zA-Z0-9_.-]`.
pub fn valid_stream_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// Turns a table root (a URL, or a local path relative to `base`) into a URL without a trailing slash.
fn table_root_url(root: &str, base: &Path) -> Result<String, ConfigError> {
    if root.contains("://") {
        let url = url::Url::parse(root).map_err(|e| {
            ConfigError::Invalid(format!("pipeline.table_root `{root}` is not a URL: {e}"))
        })?;
        return Ok(url.as_str().trim_end_matches('/').to_owned());
    }
    let path = base.join(root);
    std::fs::create_dir_all(&path).map_err(|e| {
        ConfigError::Invalid(format!(
            "cannot create the table root {}: {e}",
            path.display()
        ))
    })?;
    let absolute = std::path::absolute(&path)
        .map_err(|e| ConfigError::Invalid(format!("table root {}: {e}", path.display())))?;
    let url = url::Url::from_directory_path(&absolute).map_err(|()| {
        ConfigError::Invalid(format!(
            "table root {} is not an absolute path",
            absolute.display()
        ))
    })?;
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_budget_takes_sizes_with_units_and_refuses_the_rest_with_the_fix() {
        assert_eq!(parse_byte_size("128MiB"), Some(128 << 20));
        assert_eq!(parse_byte_size("64 KiB"), Some(64 << 10));
        assert_eq!(parse_byte_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_byte_size("4096"), Some(4096));
        for bad in ["128MB", "MiB", "-1MiB", "1.5GiB"] {
            assert_eq!(parse_byte_size(bad), None, "{bad}");
        }
        let text = DEFAULT_CONFIG.replace("memory_budget = \"128MiB\"", "memory_budget = \"lots\"");
        let err = PipelineConfig::parse(&text, "test")
            .unwrap_err()
            .to_string();
        assert!(err.contains("128MiB"), "{err}");
        let text = DEFAULT_CONFIG.replace("memory_budget = \"128MiB\"", "memory_budget = \"1MiB\"");
        let config = PipelineConfig::parse(&text, "test").unwrap();
        let err = config
            .validate(Path::new(env!("CARGO_MANIFEST_DIR")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("at least \"16MiB\""), "{err}");
    }

    /// The enhanced fan-out settings: the consumer named after the pipeline by default, and each
    /// misuse refused at start-up with the way out.
    #[test]
    fn enhanced_fan_out_settings_are_checked_with_the_fix() {
        let validate = |edit: &dyn Fn(String) -> String| {
            let text = edit(DEFAULT_CONFIG.to_owned());
            let dir = tempfile::tempdir().unwrap();
            let mut config = PipelineConfig::parse(&text, "test").unwrap();
            config.pipeline.table_root = dir.path().join("t").display().to_string();
            config.validate(Path::new(env!("CARGO_MANIFEST_DIR")))
        };
        let fan_out = |t: String| {
            t.replace(
                "consumer_mode = \"polling\"",
                "consumer_mode = \"enhanced_fan_out\"",
            )
        };
        let pipeline = validate(&fan_out).unwrap();
        assert_eq!(pipeline.kinesis.consumer_mode, ConsumerMode::EnhancedFanOut);
        assert_eq!(
            pipeline.kinesis.consumer_name.as_deref(),
            Some("kinesis-delta-pinterest")
        );
        let polling_with_a_name = |t: String| {
            t.replace(
                "# consumer_name = \"kinesis-delta-pinterest\"",
                "consumer_name = \"mine\"",
            )
        };
        let err = validate(&polling_with_a_name).unwrap_err().to_string();
        assert!(
            err.contains("consumer_mode = \"enhanced_fan_out\""),
            "{err}"
        );
        let bad_name = |t: String| {
            fan_out(t).replace(
                "# consumer_name = \"kinesis-delta-pinterest\"",
                "consumer_name = \"my consumer\"",
            )
        };
        let err = validate(&bad_name).unwrap_err().to_string();
        assert!(err.contains("a-z A-Z 0-9 _ . -"), "{err}");
        let deregister_with_leases = |t: String| {
            fan_out(t)
                .replace("# deregister_consumer = true", "deregister_consumer = true")
                .replace("# [leases]", "[leases]")
                .replace("# table = \"kinesis-delta-leases\"", "table = \"leases\"")
        };
        let err = validate(&deregister_with_leases).unwrap_err().to_string();
        assert!(err.contains("with [leases], leave it unset"), "{err}");
    }

    #[test]
    fn shipped_config_validates() {
        let dir = tempfile::tempdir().unwrap();
        let (mut config, _) = PipelineConfig::load(None).unwrap();
        config.pipeline.table_root = dir.path().join("tables").display().to_string();
        let pipeline = config
            .validate(Path::new(env!("CARGO_MANIFEST_DIR")))
            .unwrap();
        let names: Vec<_> = pipeline.streams.iter().map(|s| s.stream.as_str()).collect();
        assert_eq!(
            names,
            [
                "streaming-0a40ea42f8d1-pin",
                "streaming-0a40ea42f8d1-geo",
                "streaming-0a40ea42f8d1-user"
            ]
        );
        assert!(
            pipeline.streams[0]
                .dead_letter_uri
                .ends_with("/pin_dead_letters")
        );
    }

    #[test]
    fn the_built_in_config_runs_outside_the_repository() {
        let dir = tempfile::tempdir().unwrap();
        let (mut config, _) = PipelineConfig::load(None).unwrap();
        config.pipeline.table_root = dir.path().join("tables").display().to_string();
        let pipeline = config.validate(dir.path()).unwrap();
        assert!(pipeline.streams[0].sql.contains("follower_count"));
        let (mut from_file, _) = PipelineConfig::load(Some(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/kinesis-delta.toml"
        ))))
        .unwrap();
        from_file.pipeline.table_root = dir.path().join("tables").display().to_string();
        assert!(
            from_file.validate(dir.path()).is_err(),
            "a config file's paths must exist"
        );
    }

    #[test]
    fn bad_values_name_the_fix() {
        let (mut config, _) = PipelineConfig::load(None).unwrap();
        config.engine.max_get_records_per_second = 9;
        let err = config
            .validate(Path::new(env!("CARGO_MANIFEST_DIR")))
            .unwrap_err();
        assert!(err.to_string().contains("1 to 5"), "{err}");

        let err = PipelineConfig::parse(
            "[pipeline]\nname='x'\ntable_root='t'\nbogus=1\nstreams=[]",
            "t.toml",
        )
        .unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }

    #[test]
    fn stream_names_follow_kinesis_rules() {
        assert!(valid_stream_name("streaming-0a40ea42f8d1-pin"));
        assert!(!valid_stream_name(""));
        assert!(!valid_stream_name("a/b"));
        assert!(!valid_stream_name(&"a".repeat(129)));
    }
}
