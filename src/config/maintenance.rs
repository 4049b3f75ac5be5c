//! `[maintenance]`: how the engine keeps its tables compact and their history bounded.

use std::time::Duration;

use serde::Deserialize;

use super::byte_size;

/// Delta's own default for keeping removed files (`delta.deletedFileRetentionDuration`), and the
/// least this project accepts: `query --as-of` promises versions at least this old.
pub const MIN_VACUUM_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// `[maintenance]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaintenanceSettings {
    /// Compact a table once it holds this many files smaller than `target_file_size`; 0 never.
    pub compact_min_files: usize,
    /// The size compacted files aim at.
    #[serde(deserialize_with = "byte_size")]
    pub target_file_size: usize,
    /// Whether the engine vacuums its tables.
    pub vacuum: bool,
    /// How long files removed from a table (by compaction) are kept before vacuum deletes them.
    #[serde(with = "humantime_serde")]
    pub vacuum_retention: Duration,
    /// How often the engine vacuums each table.
    #[serde(with = "humantime_serde")]
    pub vacuum_interval: Duration,
}

impl Default for MaintenanceSettings {
    fn default() -> Self {
        Self {
            compact_min_files: 50,
            target_file_size: 128 << 20,
            vacuum: true,
            vacuum_retention: MIN_VACUUM_RETENTION,
            vacuum_interval: Duration::from_secs(24 * 3600),
        }
    }
}

impl MaintenanceSettings {
    /// Checks the values; the message says how to fix the first bad one.
    pub fn validate(&self) -> Result<(), String> {
        if self.target_file_size < 1 << 20 {
            return Err(format!(
                "maintenance.target_file_size is {} bytes; give it at least \"1MiB\" (the default, \"128MiB\", suits most tables)",
                self.target_file_size
            ));
        }
        if self.vacuum_retention < MIN_VACUUM_RETENTION {
            return Err(format!(
                "maintenance.vacuum_retention is {}; it must be at least \"7days\" (Delta's default, and how far back `query --as-of` is promised to reach); to keep every file, set vacuum = false",
                humantime::format_duration(self.vacuum_retention)
            ));
        }
        if self.vacuum_interval.is_zero() {
            return Err(
                "maintenance.vacuum_interval must be above 0 (for example \"1day\"); to never vacuum, set vacuum = false".into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_unsafe_values_are_refused_with_the_fix() {
        assert_eq!(MaintenanceSettings::default().validate(), Ok(()));
        let short = MaintenanceSettings {
            vacuum_retention: Duration::from_secs(3600),
            ..MaintenanceSettings::default()
        };
        let err = short.validate().unwrap_err();
        assert!(
            err.contains("at least \"7days\"") && err.contains("vacuum = false"),
            "{err}"
        );
        let tiny = MaintenanceSettings {
            target_file_size: 1000,
            ..MaintenanceSettings::default()
        };
        assert!(tiny.validate().unwrap_err().contains("1MiB"));
    }
}
