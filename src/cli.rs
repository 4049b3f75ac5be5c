//! Command-line arguments (clap derive; the doc comments are the `--help` text) and how they
//! override the config file.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{ConfigError, InitialPosition, Pipeline, PipelineConfig};

/// Land AWS Kinesis streams in Delta Lake tables, cleaned with SQL, exactly once.
#[derive(Debug, Parser)]
#[command(name = "kinesis-delta", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Log filter (tracing's `RUST_LOG` syntax), e.g. `info` or `kinesis_delta=debug`. The API's
    /// access log is `kinesis_delta::api::access` (on by default for `api` only).
    #[arg(long, global = true, env = "RUST_LOG")]
    pub log: Option<String>,
    /// Log lines as `text` (for people) or `json` (one object per line, for log collectors). Text
    /// is coloured only when written to a terminal.
    #[arg(long, global = true, env = "KINESIS_DELTA_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Threads that run the engine's tasks (reading, SQL, writing); decoding runs beside them.
    /// Default: one per core.
    #[arg(long, global = true, env = "KINESIS_DELTA_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    pub worker_threads: Option<u16>,
}

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line per event for people; coloured on a terminal only.
    Text,
    /// One JSON object per event.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the streaming engine: Kinesis → cleaning SQL → Delta tables, exactly once.
    Run(RunArgs),
    /// Create, list, describe or delete Kinesis streams.
    Streams(StreamsArgs),
    /// Serve the REST API (the seed's API Gateway resource tree) in front of Kinesis.
    Api(ApiArgs),
    /// Serve an embedded Kinesis-compatible endpoint on loopback (local mode, no AWS account).
    Kinesis(KinesisArgs),
    /// Write the Pinterest source tables (generated) as files or into a SQL database.
    Dataset(DatasetArgs),
    /// Post Pinterest data to the streams, through the API or straight to Kinesis.
    Emulate(EmulateArgs),
    /// Run SQL over the Delta tables (inline, from a file, or interactively).
    Query(QueryArgs),
    /// Compact, checkpoint and vacuum the tables once (the engine does it as it runs).
    Maintain(MaintainArgs),
    /// Show every shard: which process holds it ([leases]), its committed checkpoint, its lag.
    Leases(LeasesArgs),
    /// Show a table's versions: the batch each holds, its rows and dead letters, and the
    /// fingerprint of the schema and SQL that cleaned them.
    History(HistoryArgs),
    /// Run a stream's schema and cleaning SQL over a sample and print the rows, their schema and
    /// the would-be dead letters; nothing is written.
    Preview(PreviewArgs),
    /// Derive a stream's table (and dead letters) again from its raw table with the current
    /// schema and SQL, as one new table version; the checkpoints stay where they are.
    Rebuild(RebuildArgs),
    /// Answer the analysts' questions (sql/analytics) in an HTML report, and CSVs on request.
    Report(ReportArgs),
    /// The whole pipeline on this machine: embedded Kinesis, streams, API, emulator, engine, report.
    Demo(DemoArgs),
}

/// `kinesis-delta demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Pipeline settings (the config; its Kinesis endpoint is replaced by the embedded one).
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// The data folder: Kinesis state, tables (unless --table-root), report.
    #[arg(long, env = "KINESIS_DELTA_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Posts the emulator sends.
    #[arg(long, default_value_t = 2000)]
    pub posts: u64,
    /// Stop posting after this long (e.g. "2m"), even before --posts are sent.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<std::time::Duration>,
    /// Posts per second.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Shards per stream.
    #[arg(long, default_value_t = 2)]
    pub shards: i32,
    /// The analytics SQL folder.
    #[arg(long, default_value = "sql/analytics")]
    pub analytics: PathBuf,
    /// Progress output of the engine.
    #[arg(long, value_enum, default_value_t = ProgressFormat::Text)]
    pub progress: ProgressFormat,
    /// Metrics and health checks.
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// `kinesis-delta query`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// Pipeline settings (which tables, where).
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// The SQL to run; none (and no --file) opens an interactive prompt on a terminal.
    pub sql: Option<String>,
    /// Run the SQL in this file.
    #[arg(long, conflicts_with = "sql")]
    pub file: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = crate::query::OutputFormat::Table)]
    pub format: crate::query::OutputFormat,
    /// Write the result to this file (required for parquet).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Rows shown in the table format before the rest is cut (visibly).
    #[arg(long, default_value_t = 40)]
    pub max_rows: usize,
    /// Read a table as of a version or time: TABLE=VERSION or TABLE=TIMESTAMP (repeatable).
    #[arg(long = "as-of")]
    pub as_of: Vec<String>,
    /// A folder of views to register (`NAME.sql` holds the view NAME's query), when it exists.
    #[arg(long, default_value = "sql/analytics/views")]
    pub views: PathBuf,
}

/// `kinesis-delta maintain`.
#[derive(Debug, Args)]
pub struct MaintainArgs {
    /// Pipeline settings (which tables, where, and `[maintenance]`).
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// The tables to maintain, by folder name (`pin`, `pin_dead_letters`, …); none means all.
    pub tables: Vec<String>,
}

/// `kinesis-delta leases`.
#[derive(Debug, Args)]
pub struct LeasesArgs {
    /// Pipeline settings (which streams and tables, and `[leases]`).
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `kinesis-delta history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Pipeline settings (which tables, where).
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// The stream's name in the config (`pin`, `geo`, `user`).
    pub stream: String,
    /// The dead-letter table's versions instead of the cleaned table's.
    #[arg(long)]
    pub dead_letters: bool,
    /// The raw table's versions instead of the cleaned table's.
    #[arg(long, conflicts_with = "dead_letters")]
    pub raw: bool,
    /// How many versions, newest first.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `kinesis-delta preview`.
#[derive(Debug, Args)]
pub struct PreviewArgs {
    /// Pipeline settings (the stream's schema and SQL, and Kinesis for a stream sample).
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// The stream's name in the config (`pin`, `geo`, `user`).
    pub stream: String,
    /// A JSON-lines file to use as the sample (each line one record) instead of the stream.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// The newest records of the stream's raw table instead of the stream.
    #[arg(long, conflicts_with = "file")]
    pub raw: bool,
    /// Without --file: the newest this many records (of the stream, or with --raw its raw table).
    #[arg(long, default_value_t = 20, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub newest: usize,
    /// From the stream: how far back to look for them (e.g. "1h", "30m").
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub since: std::time::Duration,
    /// At most this many rows printed.
    #[arg(long, default_value_t = 20)]
    pub max_rows: usize,
}

/// `kinesis-delta rebuild`.
#[derive(Debug, Args)]
pub struct RebuildArgs {
    /// Pipeline settings (the stream's tables, schema and SQL).
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// The stream's name in the config (`pin`, `geo`, `user`).
    pub stream: String,
}

/// `kinesis-delta report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Pipeline settings (which tables, where).
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// The folder of analytics SQL files.
    #[arg(long, default_value = "sql/analytics")]
    pub analytics: PathBuf,
    /// Where the HTML report goes.
    #[arg(long, default_value = "data/report.html")]
    pub html: PathBuf,
    /// Also write one CSV per question into this folder (q1.csv, q3a.csv, …).
    #[arg(long)]
    pub csv: Option<PathBuf>,
}

/// Which generated dataset.
#[derive(Debug, Clone, Args)]
pub struct GeneratorArgs {
    /// Rows per table.
    #[arg(long, default_value_t = 11_150)]
    pub rows: usize,
    /// Seed of the generator (the same seed gives the same rows).
    #[arg(long, default_value_t = 100)]
    pub seed: u64,
    /// Write datetimes in the `T` form (Python's isoformat()) instead of the space form.
    #[arg(long)]
    pub isoformat: bool,
}

impl GeneratorArgs {
    /// The dataset these flags describe.
    pub fn spec(&self) -> crate::dataset::DatasetSpec {
        crate::dataset::DatasetSpec {
            rows: self.rows,
            seed: self.seed,
            isoformat: self.isoformat,
        }
    }
}

/// `kinesis-delta dataset`.
#[derive(Debug, Args)]
pub struct DatasetArgs {
    /// What to generate.
    #[command(flatten)]
    pub generator: GeneratorArgs,
    /// Write files into this folder (with --format) instead of a database.
    #[arg(long, conflicts_with = "database")]
    pub out: Option<PathBuf>,
    /// File format with --out.
    #[arg(long, value_enum, default_value_t = crate::dataset::FileFormat::Jsonl)]
    pub format: crate::dataset::FileFormat,
    /// Load into this database: sqlite://path?mode=rwc or mysql://user:password@127.0.0.1:3306/db.
    #[arg(
        long,
        env = "KINESIS_DELTA_DATABASE_URL",
        default_value = "sqlite://data/pinterest.db?mode=rwc"
    )]
    pub database: String,
}

/// `kinesis-delta emulate`.
#[derive(Debug, Args)]
pub struct EmulateArgs {
    /// Pipeline settings (stream names; the Kinesis endpoint with --direct).
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// The generated dataset (the default source).
    #[command(flatten)]
    pub generator: GeneratorArgs,
    /// Read posts from the JSON-lines files of `kinesis-delta dataset --out DIR`.
    #[arg(long, conflicts_with = "from_database")]
    pub from_files: Option<PathBuf>,
    /// Read posts from a database holding pinterest_data, geolocation_data and user_data.
    #[arg(long)]
    pub from_database: Option<String>,
    /// Read rows in order instead of at random offsets.
    #[arg(long)]
    pub sequential: bool,
    /// The API to post to.
    #[arg(
        long,
        env = "KINESIS_DELTA_API_URL",
        default_value = "http://127.0.0.1:8080",
        conflicts_with = "direct"
    )]
    pub api: String,
    /// The API key, sent as x-api-key.
    #[arg(long, env = "KINESIS_DELTA_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Skip the API: PutRecords straight to Kinesis (for engine load tests).
    #[arg(long)]
    pub direct: bool,
    /// Posts per request (`/records` batches, or PutRecords with --direct); without it each record
    /// is PUT on its own to `/record`, as the original did.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=500))]
    pub batch: Option<u16>,
    /// With --direct and --batch: put the records of each PutRecords this many to a Kinesis
    /// record, in the aggregation format of the Kinesis Producer Library (KPL).
    #[arg(long, requires_all = ["direct", "batch"], value_parser = clap::value_parser!(u16).range(1..=500))]
    pub kpl: Option<u16>,
    /// Posts per second, or `max`; default: the original's random 0-1 s sleep between posts.
    #[arg(long)]
    pub rate: Option<String>,
    /// Stop after this many posts.
    #[arg(long)]
    pub count: Option<u64>,
    /// Stop after this long (e.g. "5m").
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<std::time::Duration>,
    /// Partition keys: `uuid` (random, default), `id` (the post id), or `constant:<key>`.
    #[arg(long, default_value = "uuid")]
    pub partition_key: String,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Print the final summary as JSON.
    #[arg(long)]
    pub json: bool,
}

impl EmulateArgs {
    /// The pace these flags ask for.
    pub fn pace(&self) -> Result<crate::emulator::Pace, ConfigError> {
        use crate::emulator::Pace;
        match self.rate.as_deref() {
            None => Ok(Pace::Original),
            Some("max") => Ok(Pace::Max),
            Some(text) => match text.trim_end_matches("/s").parse::<f64>() {
                Ok(rate) if rate > 0.0 => Ok(Pace::Rate(rate)),
                _ => Err(ConfigError::Invalid(format!(
                    "--rate `{text}`: give posts per second (e.g. 50) or `max`"
                ))),
            },
        }
    }

    /// The partition-key mode these flags ask for.
    pub fn keys(&self) -> Result<crate::emulator::KeyMode, ConfigError> {
        use crate::emulator::KeyMode;
        match self.partition_key.as_str() {
            "uuid" => Ok(KeyMode::Uuid),
            "id" => Ok(KeyMode::Id),
            other => match other.strip_prefix("constant:") {
                Some(key) if !key.is_empty() => Ok(KeyMode::Constant(key.to_owned())),
                _ => Err(ConfigError::Invalid(format!(
                    "--partition-key `{other}`: use `uuid`, `id` or `constant:<key>`"
                ))),
            },
        }
    }
}

/// `kinesis-delta streams`.
#[derive(Debug, Args)]
pub struct StreamsArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: StreamsAction,
    /// Pipeline settings (Kinesis endpoint, region; the config's stream names).
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

/// The `streams` actions.
#[derive(Debug, Subcommand)]
pub enum StreamsAction {
    /// Create streams (default: the pipeline's) and wait until they are ACTIVE; existing ones are
    /// reported, not an error.
    Create {
        /// Stream names; none means every stream of the pipeline config.
        names: Vec<String>,
        /// Shards per new stream.
        #[arg(long, default_value_t = 5)]
        shards: i32,
    },
    /// List every stream.
    List,
    /// Describe a stream and its shards.
    Describe {
        /// The stream.
        name: String,
    },
    /// Delete streams (default: the pipeline's).
    Delete {
        /// Stream names; none means every stream of the pipeline config.
        names: Vec<String>,
    },
}

/// `kinesis-delta api`.
#[derive(Debug, Args)]
pub struct ApiArgs {
    /// Pipeline settings (the Kinesis endpoint and region).
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Address to listen on.
    #[arg(long, env = "KINESIS_DELTA_API_BIND", default_value = "127.0.0.1:8080")]
    pub bind: std::net::SocketAddr,
    /// Require this value in every request's `x-api-key` header (403 otherwise).
    #[arg(long, env = "KINESIS_DELTA_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "KINESIS_DELTA_API_MAX_BODY_BYTES", default_value_t = 10 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// How long a request may take before it is answered 408 (e.g. "30s").
    #[arg(long, env = "KINESIS_DELTA_API_REQUEST_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub request_timeout: std::time::Duration,
    /// Metrics and health checks.
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// `kinesis-delta kinesis`.
#[derive(Debug, Args)]
pub struct KinesisArgs {
    /// Address to listen on (keep it on loopback).
    #[arg(
        long,
        env = "KINESIS_DELTA_LOCAL_KINESIS_BIND",
        default_value = "127.0.0.1:4567"
    )]
    pub bind: std::net::SocketAddr,
    /// Folder for the durable state (WAL + snapshots).
    #[arg(
        long,
        env = "KINESIS_DELTA_LOCAL_KINESIS_DIR",
        default_value = "data/kinesis"
    )]
    pub state_dir: PathBuf,
    /// Keep the state in memory only (lost on exit).
    #[arg(long)]
    pub in_memory: bool,
}

/// The settings every command that talks to Kinesis and the tables shares.
#[derive(Debug, Clone, Args)]
pub struct PipelineArgs {
    /// The pipeline config (TOML). Default: the built-in Pinterest pipeline, with paths relative
    /// to the current folder.
    #[arg(long, short, global = true, env = "KINESIS_DELTA_CONFIG")]
    pub config: Option<PathBuf>,
    /// Kinesis endpoint (a local server, e.g. http://127.0.0.1:4567). The AWS SDK's
    /// AWS_ENDPOINT_URL_KINESIS / AWS_ENDPOINT_URL are honoured too.
    #[arg(long, global = true, env = "KINESIS_DELTA_ENDPOINT_URL")]
    pub endpoint_url: Option<String>,
    /// AWS region.
    #[arg(long, global = true, env = "AWS_REGION")]
    pub region: Option<String>,
    /// AWS profile for credentials.
    #[arg(long, global = true, env = "AWS_PROFILE")]
    pub profile: Option<String>,
    /// Where the tables are written: a folder or s3://bucket/prefix.
    #[arg(long, global = true, env = "KINESIS_DELTA_TABLE_ROOT")]
    pub table_root: Option<String>,
    /// Substituted for {user_id} in the config's stream names.
    #[arg(long, global = true, env = "KINESIS_DELTA_USER_ID")]
    pub user_id: Option<String>,
}

impl Cli {
    /// The log filter: the one given, or a default that fits the command.
    pub fn log_filter(&self) -> String {
        self.log.clone().unwrap_or_else(|| match self.command {
            Command::Api(_) => "warn,kinesis_delta=info".to_owned(),
            _ => "warn,kinesis_delta=info,kinesis_delta::api::access=warn".to_owned(),
        })
    }
}

impl PipelineArgs {
    /// Loads the config, applies these overrides and validates the result.
    pub fn pipeline(&self) -> Result<Pipeline, ConfigError> {
        let (mut config, base) = PipelineConfig::load(self.config.as_deref())?;
        if let Some(endpoint) = &self.endpoint_url {
            config.kinesis.endpoint_url = Some(endpoint.clone());
        }
        if let Some(region) = &self.region {
            config.kinesis.region = region.clone();
        }
        if let Some(profile) = &self.profile {
            config.kinesis.profile = Some(profile.clone());
        }
        if let Some(root) = &self.table_root {
            // A root given on the command line is relative to the current folder, not the file.
            config.pipeline.table_root = if root.contains("://") {
                root.clone()
            } else {
                std::path::absolute(root).map_or_else(|_| root.clone(), |p| p.display().to_string())
            };
        }
        if let Some(user_id) = &self.user_id {
            config.pipeline.user_id = user_id.clone();
        }
        config.validate(&base)
    }
}

/// `kinesis-delta run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Pipeline settings.
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Read every shard up to its current end, commit, and exit 0 (like Spark's Trigger.AvailableNow).
    #[arg(long)]
    pub available_now: bool,
    /// Where shards without a checkpoint start (overrides the config).
    #[arg(long, value_enum)]
    pub initial_position: Option<InitialPosition>,
    /// Progress output: one line per committed batch and table, as text or JSON lines.
    #[arg(long, value_enum, default_value_t = ProgressFormat::Text, env = "KINESIS_DELTA_PROGRESS")]
    pub progress: ProgressFormat,
    /// When a stream is not the one its checkpoints were taken on (recreated, or its server lost
    /// its data): stop, or restart from its earliest record (overrides the config).
    #[arg(long, value_enum)]
    pub on_lost_stream: Option<crate::config::LostStreamPolicy>,
    /// This process's name in the lease table (with [leases]; a pod name, say). Without it each
    /// process gets a unique one: host, process id and a random part.
    #[arg(long, env = "KINESIS_DELTA_WORKER_ID")]
    pub worker_id: Option<String>,
    /// Metrics and health checks.
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// Where the metrics and health checks are served (`run`, `api`, `demo`).
#[derive(Debug, Clone, Args)]
pub struct AdminArgs {
    /// Serve /metrics (Prometheus), /healthz and /readyz on this address: a port (`9464`, bound to
    /// loopback) or HOST:PORT (`0.0.0.0:9464` to be reached from outside, as in a container).
    /// Off unless given.
    #[arg(long, env = "KINESIS_DELTA_ADMIN_ADDRESS", value_parser = parse_admin_address)]
    pub admin_address: Option<std::net::SocketAddr>,
}

/// A port alone means loopback: metrics are not published to the network by accident.
fn parse_admin_address(text: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(port) = text.parse::<u16>() {
        return Ok(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    }
    text.parse().map_err(|_| {
        format!("`{text}`: give a port (9464) or an IP address and port (0.0.0.0:9464)")
    })
}

/// How progress is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressFormat {
    /// Aligned text for people.
    Text,
    /// One JSON object per line.
    Json,
}

impl RunArgs {
    /// The validated pipeline for this run.
    pub fn pipeline(&self) -> Result<Pipeline, ConfigError> {
        let mut pipeline = self.pipeline.pipeline()?;
        if let Some(position) = self.initial_position {
            if position == InitialPosition::AtTimestamp
                && pipeline.kinesis.initial_timestamp.is_none()
            {
                return Err(ConfigError::Invalid(
                    "--initial-position at-timestamp needs kinesis.initial_timestamp in the config"
                        .into(),
                ));
            }
            pipeline.kinesis.initial_position = position;
        }
        if let Some(policy) = self.on_lost_stream {
            pipeline.engine.on_lost_stream = policy;
        }
        if let Some(id) = &self.worker_id {
            let Some(leases) = &mut pipeline.leases else {
                return Err(ConfigError::Invalid(
                    "--worker-id names this process in the lease table, and the config has no [leases] section: add one (see README, \"Several processes\"), or drop --worker-id".into(),
                ));
            };
            leases.worker_id = Some(id.clone());
            leases.validate().map_err(ConfigError::Invalid)?;
        }
        Ok(pipeline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_override_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("t");
        let cli = Cli::try_parse_from([
            "kinesis-delta",
            "run",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/kinesis-delta.toml"),
            "--user-id",
            "abc",
            "--endpoint-url",
            "http://127.0.0.1:1",
            "--table-root",
            root.to_str().unwrap(),
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("parsed as run")
        };
        let pipeline = args.pipeline().unwrap();
        assert_eq!(pipeline.streams[0].stream, "streaming-abc-pin");
        assert_eq!(
            pipeline.kinesis.endpoint_url.as_deref(),
            Some("http://127.0.0.1:1")
        );
        assert!(
            pipeline.table_root.ends_with("/t"),
            "{}",
            pipeline.table_root
        );
    }

    #[test]
    fn an_admin_port_alone_is_bound_to_loopback() {
        assert_eq!(
            parse_admin_address("9464").unwrap().to_string(),
            "127.0.0.1:9464"
        );
        assert_eq!(
            parse_admin_address("0.0.0.0:9464").unwrap().to_string(),
            "0.0.0.0:9464"
        );
        let refused = parse_admin_address("localhost:9464").unwrap_err();
        assert!(refused.contains("0.0.0.0:9464"), "{refused}");
    }
}
