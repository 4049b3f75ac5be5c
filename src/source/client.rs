//! Builds the AWS SDK clients from the pipeline's Kinesis settings: Kinesis, and DynamoDB for the
//! shard leases.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_kinesis::config::{Credentials, ProvideCredentials};

use super::SourceError;
use crate::config::KinesisSettings;

/// The Kinesis client every command uses.
pub type KinesisClient = aws_sdk_kinesis::Client;

/// Connects like [`connect`], then makes sure there are credentials to sign with: without them
/// every call would fail and be retried, so a missing one stops the caller at once instead.
///
/// A loopback endpoint needs none (see [`connect`]); otherwise the configured profile or the
/// default chain must provide some within 15 s.
pub async fn connect_checked(settings: &KinesisSettings) -> Result<KinesisClient, SourceError> {
    let config = sdk_config(settings).await;
    let client = KinesisClient::new(&config);
    let Some(provider) = config.credentials_provider() else {
        return Err(SourceError::NoCredentials {
            reason: "no credentials provider is configured".to_owned(),
        });
    };
    let provided =
        tokio::time::timeout(Duration::from_secs(15), provider.provide_credentials()).await;
    match provided {
        Ok(Ok(_)) => Ok(client),
        Ok(Err(e)) => Err(SourceError::NoCredentials {
            reason: one_line(
                &aws_smithy_types::error::display::DisplayErrorContext(&e).to_string(),
            ),
        }),
        Err(_) => Err(SourceError::NoCredentials {
            reason: "the credential chain did not answer within 15 s".to_owned(),
        }),
    }
}

/// Connects with the default credential chain and region, or the configured endpoint.
///
/// Retries are left to the engine (one backoff policy, aware of shutdown), so the SDK's own are off.
/// A loopback endpoint (a local Kinesis server) gets fixed dummy credentials: such servers accept any
/// signature, and a laptop without an AWS account has none to find.
pub async fn connect(settings: &KinesisSettings) -> KinesisClient {
    KinesisClient::new(&sdk_config(settings).await)
}

/// A DynamoDB client for the lease table: the Kinesis settings' region, profile and credentials,
/// at `endpoint` (a local server) or else AWS.
pub async fn connect_dynamodb(
    settings: &KinesisSettings,
    endpoint: Option<&str>,
) -> aws_sdk_dynamodb::Client {
    let settings = KinesisSettings {
        endpoint_url: endpoint.map(str::to_owned),
        ..settings.clone()
    };
    aws_sdk_dynamodb::Client::new(&sdk_config(&settings).await)
}

async fn sdk_config(settings: &KinesisSettings) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(settings.region.clone()))
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(Duration::from_secs(30))
                .build(),
        );
    if let Some(profile) = &settings.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(endpoint) = &settings.endpoint_url {
        loader = loader.endpoint_url(endpoint);
        if is_loopback(endpoint) {
            loader = loader.credentials_provider(Credentials::new(
                "local",
                "local",
                None,
                None,
                "kinesis-delta-local-endpoint",
            ));
        }
    }
    loader.load().await
}

/// The credential chain's error context, folded onto one line and cut to a readable length.
fn one_line(text: &str) -> String {
    let folded = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match folded.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &folded[..cut]),
        None => folded,
    }
}

fn is_loopback(endpoint: &str) -> bool {
    url::Url::parse(endpoint)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .is_some_and(|h| h == "localhost" || h == "[::1]" || h.starts_with("127."))
}

#[cfg(test)]
mod tests {
    #[test]
    fn loopback_endpoints_are_recognised() {
        assert!(super::is_loopback("http://127.0.0.1:4567"));
        assert!(super::is_loopback("http://localhost:4567/"));
        assert!(!super::is_loopback(
            "https://kinesis.us-east-1.amazonaws.com"
        ));
    }
}
