//! `streams`: stream administration for people (`--json` for scripts).

use kinesis_delta::cli::{StreamsAction, StreamsArgs};
use kinesis_delta::source::connect;
use kinesis_delta::streams;

#[allow(clippy::print_stdout)]
pub async fn streams_command(args: StreamsArgs) -> anyhow::Result<()> {
    let pipeline = args.pipeline.pipeline()?;
    let client = connect(&pipeline.kinesis).await;
    let configured = || {
        pipeline
            .streams
            .iter()
            .map(|s| s.stream.clone())
            .collect::<Vec<_>>()
    };
    let or_configured = |names: Vec<String>| {
        if names.is_empty() {
            configured()
        } else {
            names
        }
    };
    match args.action {
        StreamsAction::Create { names, shards } => {
            let mut results = Vec::new();
            for name in or_configured(names) {
                let outcome = streams::create(&client, &name, shards).await?;
                streams::wait_active(&client, &name, std::time::Duration::from_secs(120)).await?;
                if !args.json {
                    let what = match outcome {
                        streams::CreateOutcome::Created => {
                            format!("created with {shards} shards, ACTIVE")
                        }
                        streams::CreateOutcome::Exists => "exists already, ACTIVE".to_owned(),
                    };
                    println!("{name}: {what}");
                }
                results.push(serde_json::json!({"stream": name, "outcome": outcome}));
            }
            if args.json {
                println!("{}", serde_json::Value::Array(results));
            }
        }
        StreamsAction::List => {
            let names = streams::list(&client).await?;
            if args.json {
                println!("{}", serde_json::json!(names));
            } else {
                names.iter().for_each(|n| println!("{n}"));
            }
        }
        StreamsAction::Describe { name } => {
            let d = streams::describe(&client, &name).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&d)?);
            } else {
                println!(
                    "{} ({}), {} shards, retention {} h",
                    d.stream_name,
                    d.stream_status,
                    d.shards.len(),
                    d.retention_period_hours
                );
                for shard in &d.shards {
                    let parent = shard
                        .parent_shard_id
                        .as_deref()
                        .map(|p| format!(" (child of {p})"))
                        .unwrap_or_default();
                    println!("  {}{parent}", shard.shard_id);
                }
            }
        }
        StreamsAction::Delete { names } => {
            for name in or_configured(names) {
                streams::delete(&client, &name).await?;
                if args.json {
                    println!(
                        "{}",
                        serde_json::json!({"stream": name, "outcome": "deleting"})
                    );
                } else {
                    println!("{name}: deleting");
                }
            }
        }
    }
    Ok(())
}
