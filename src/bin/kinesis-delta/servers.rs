//! `api` and `kinesis`: the long-running local servers.

use anyhow::Context;
use kinesis_delta::api::{self, ApiSettings};
use kinesis_delta::cli::{ApiArgs, KinesisArgs};
use kinesis_delta::local::{LocalKinesis, LocalKinesisSettings};
use kinesis_delta::source::connect;

use crate::{shutdown_on_signal, start_admin};

pub async fn serve_api(args: ApiArgs) -> anyhow::Result<()> {
    let pipeline = args.pipeline.pipeline()?;
    start_admin(&args.admin).await?;
    let client = connect(&pipeline.kinesis).await;
    let settings = ApiSettings {
        api_key: args.api_key,
        max_body_bytes: args.max_body_bytes,
        request_timeout: args.request_timeout,
    };
    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (choose another with --bind)",
                args.bind
            )
        })?;
    tracing::info!(address = %args.bind, "API listening");
    let cancel = shutdown_on_signal();
    tokio::spawn(api::check_kinesis(client.clone(), cancel.clone()));
    api::serve(listener, api::app(client, &settings), cancel)
        .await
        .context("API server")
}

pub async fn serve_kinesis(args: KinesisArgs) -> anyhow::Result<()> {
    let settings = LocalKinesisSettings {
        bind: args.bind,
        state_dir: (!args.in_memory).then_some(args.state_dir),
        subscription_lifetime: kinesis_delta::local::SUBSCRIPTION_LIFETIME,
    };
    let cancel = shutdown_on_signal();
    let server = LocalKinesis::start(&settings, cancel)
        .await
        .with_context(|| {
            format!(
                "cannot start the embedded Kinesis on {} (choose another with --bind)",
                args.bind
            )
        })?;
    eprintln!("Kinesis endpoint: {} (Ctrl-C to stop)", server.endpoint);
    server.stopped().await.context("embedded Kinesis")
}
