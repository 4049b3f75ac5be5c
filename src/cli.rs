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
    /// Log filter (tracing's `RUST_LOG` syntax), e.g. `info` or `kinesis_delta=debug`.
    #[arg(
        long,
        global = true,
        env = "RUST_LOG",
        default_value = "warn,kinesis_delta=info"
    )]
    pub log: String,
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
    #[arg(long, short, env = "KINESIS_DELTA_CONFIG")]
    pub config: Option<PathBuf>,
    /// Kinesis endpoint (a local server, e.g. http://127.0.0.1:4567). The AWS SDK's
    /// AWS_ENDPOINT_URL_KINESIS / AWS_ENDPOINT_URL are honoured too.
    #[arg(long, env = "KINESIS_DELTA_ENDPOINT_URL")]
    pub endpoint_url: Option<String>,
    /// AWS region.
    #[arg(long, env = "AWS_REGION")]
    pub region: Option<String>,
    /// AWS profile for credentials.
    #[arg(long, env = "AWS_PROFILE")]
    pub profile: Option<String>,
    /// Where the tables are written: a folder or s3://bucket/prefix.
    #[arg(long, env = "KINESIS_DELTA_TABLE_ROOT")]
    pub table_root: Option<String>,
    /// Substituted for {user_id} in the config's stream names.
    #[arg(long, env = "KINESIS_DELTA_USER_ID")]
    pub user_id: Option<String>,
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
}
