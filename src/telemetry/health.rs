//! Readiness, as `GET /readyz` answers it: every check the process registered has passed, and
//! the ones that must keep passing (a stream's reads and commits) did so recently.
//!
//! The engine registers one check per stream when it starts and marks it each time the stream
//! reads from Kinesis or commits: ready once every stream has, and no longer ready when one has
//! not for [`STREAM_STALLED_AFTER`]. The API registers one check, passed once Kinesis answers.
//! A stopping process is not ready. One registry per process ([`readiness`]), like the metrics
//! recorder.

use std::collections::BTreeMap;
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long a stream may go without a Kinesis read or a commit before the process stops being
/// ready: far longer than a read's backoff (10 s at most) or a batch, short enough for an alert.
pub const STREAM_STALLED_AFTER: Duration = Duration::from_secs(300);

/// The process's readiness checks.
#[derive(Debug, Default)]
pub struct Readiness {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    checks: BTreeMap<String, Check>,
    stopping: bool,
}

#[derive(Debug, Clone, Copy)]
struct Check {
    /// When it last passed.
    passed: Option<Instant>,
    /// It must pass again within this long to stay ready (`None`: once is enough).
    stale_after: Option<Duration>,
}

/// The process's one registry.
pub fn readiness() -> &'static Readiness {
    static READINESS: LazyLock<Readiness> = LazyLock::new(Readiness::default);
    &READINESS
}

impl Readiness {
    /// Registers a check that has not passed yet (again registering an existing check resets it).
    pub fn expect(&self, check: &str, stale_after: Option<Duration>) {
        self.lock().checks.insert(
            check.to_owned(),
            Check {
                passed: None,
                stale_after,
            },
        );
    }

    /// Marks a registered check as passed now (an unregistered one is ignored).
    pub fn passed(&self, check: &str) {
        if let Some(c) = self.lock().checks.get_mut(check) {
            c.passed = Some(Instant::now());
        }
    }

    /// Removes a check (a stream that finished its run).
    pub fn forget(&self, check: &str) {
        self.lock().checks.remove(check);
    }

    /// The process is stopping: not ready from now on.
    pub fn stopping(&self) {
        self.lock().stopping = true;
    }

    /// `Ok` with one line per check when ready at `now`; `Err` with the lines of the checks that
    /// fail otherwise.
    pub fn report(&self, now: Instant) -> Result<String, String> {
        let state = self.lock();
        if state.stopping {
            return Err("stopping".to_owned());
        }
        if state.checks.is_empty() {
            return Err("starting".to_owned());
        }
        let mut failing = Vec::new();
        let mut lines = Vec::new();
        for (name, check) in &state.checks {
            let line = match (check.passed, check.stale_after) {
                (None, _) => Err(format!("{name}: not yet")),
                (Some(at), Some(limit)) if now.duration_since(at) > limit => Err(format!(
                    "{name}: nothing for {} s (limit {} s)",
                    now.duration_since(at).as_secs(),
                    limit.as_secs()
                )),
                (Some(at), _) => Ok(format!(
                    "{name}: ok {} s ago",
                    now.duration_since(at).as_secs()
                )),
            };
            match line {
                Ok(line) => lines.push(line),
                Err(line) => failing.push(line),
            }
        }
        if failing.is_empty() {
            Ok(lines.join("\n"))
        } else {
            Err(failing.join("\n"))
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::Readiness;

    #[test]
    fn ready_once_every_check_passed_and_none_is_stale() {
        let readiness = Readiness::default();
        assert_eq!(readiness.report(Instant::now()), Err("starting".to_owned()));
        readiness.expect("stream pin", Some(Duration::from_secs(60)));
        readiness.expect("kinesis", None);
        readiness.passed("stream pin");
        let not_yet = readiness.report(Instant::now()).unwrap_err();
        assert_eq!(not_yet, "kinesis: not yet");
        readiness.passed("kinesis");
        assert!(readiness.report(Instant::now()).is_ok());

        let later = Instant::now() + Duration::from_secs(61);
        let stale = readiness.report(later).unwrap_err();
        assert!(stale.starts_with("stream pin: nothing for 6"), "{stale}");
        readiness.passed("stream pin");
        assert!(readiness.report(Instant::now()).is_ok());
        readiness.forget("stream pin");
        assert!(
            readiness.report(later).is_ok(),
            "kinesis passes once for all"
        );

        readiness.stopping();
        assert_eq!(readiness.report(Instant::now()), Err("stopping".to_owned()));
    }
}
