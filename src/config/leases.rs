//! `[leases]`: several engine processes share the shards of the pipeline's streams, through a
//! DynamoDB table that says which process reads which shard.

use std::time::Duration;

use serde::Deserialize;

/// The shortest lease accepted: a heartbeat every third of it must fit DynamoDB's round trips.
const MIN_LEASE_DURATION: Duration = Duration::from_secs(3);

/// `[leases]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseSettings {
    /// The DynamoDB table (created, on-demand, when missing).
    pub table: String,
    /// A DynamoDB-compatible endpoint (a local server); `None` uses AWS in `kinesis.region`.
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// This process's id in the table; `None` makes a unique one (`<host>-<pid>-<random>`).
    #[serde(default)]
    pub worker_id: Option<String>,
    /// A stopped process's leases are taken after this long without a renewal.
    #[serde(with = "humantime_serde", default = "default_duration")]
    pub duration: Duration,
}

fn default_duration() -> Duration {
    Duration::from_secs(30)
}

impl LeaseSettings {
    /// Checks the values; the message says how to fix the first bad one.
    pub fn validate(&self) -> Result<(), String> {
        let name_ok = (3..=255).contains(&self.table.len())
            && self
                .table
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !name_ok {
            return Err(format!(
                "leases.table `{}` is not a DynamoDB table name: 3 to 255 of a-z A-Z 0-9 _ . -",
                self.table
            ));
        }
        if let Some(url) = &self.endpoint_url
            && url::Url::parse(url).is_err()
        {
            return Err(format!(
                "leases.endpoint_url `{url}` is not a URL (e.g. http://127.0.0.1:8000)"
            ));
        }
        if self
            .worker_id
            .as_ref()
            .is_some_and(|id| id.trim().is_empty())
        {
            return Err(
                "leases.worker_id is empty: remove it (each process then gets a unique id) or name the process".into(),
            );
        }
        if self.duration < MIN_LEASE_DURATION {
            return Err(format!(
                "leases.duration is {}; give it at least \"3s\" (the default, \"30s\", suits most pipelines)",
                humantime::format_duration(self.duration)
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(table: &str, duration: Duration) -> LeaseSettings {
        LeaseSettings {
            table: table.to_owned(),
            endpoint_url: None,
            worker_id: None,
            duration,
        }
    }

    #[test]
    fn bad_lease_settings_are_refused_with_the_fix() {
        assert_eq!(settings("leases", default_duration()).validate(), Ok(()));
        let err = settings("a b", default_duration()).validate().unwrap_err();
        assert!(err.contains("not a DynamoDB table name"), "{err}");
        let err = settings("leases", Duration::from_millis(500))
            .validate()
            .unwrap_err();
        assert!(err.contains("at least \"3s\""), "{err}");
        let blank = LeaseSettings {
            worker_id: Some(" ".into()),
            ..settings("leases", default_duration())
        };
        assert!(blank.validate().unwrap_err().contains("worker_id"));
    }
}
