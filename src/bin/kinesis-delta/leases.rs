//! `leases`: where every shard stands (owner, checkpoint, lag), as a table or `--json`.

use kinesis_delta::cli::LeasesArgs;
use kinesis_delta::pipeline::{Owners, shard_status};

#[allow(clippy::print_stdout)]
pub async fn leases(args: LeasesArgs) -> anyhow::Result<()> {
    let pipeline = args.pipeline.pipeline()?;
    let (statuses, owners) = shard_status(&pipeline).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&statuses)?);
        return Ok(());
    }
    match owners {
        Owners::NoLeases => println!("(no [leases] in the config: one process reads every shard)"),
        Owners::NoLeaseTable(table) => println!(
            "(the lease table `{table}` does not exist yet: no engine with [leases] has started)"
        ),
        Owners::LeaseTable => {}
    }
    println!(
        "{:<32} {:<22} {:<28} {:>6} {:>12}  last sequence",
        "stream", "shard", "owner", "plan", "behind"
    );
    for s in &statuses {
        let behind = if s.finished {
            "ended".to_owned()
        } else {
            s.millis_behind
                .map_or_else(|| "?".to_owned(), |ms| format!("{ms} ms"))
        };
        println!(
            "{:<32} {:<22} {:<28} {:>6} {:>12}  {}",
            s.stream,
            s.shard,
            s.owner.as_deref().unwrap_or("-"),
            s.plan,
            behind,
            s.last.as_deref().unwrap_or("-"),
        );
    }
    Ok(())
}
