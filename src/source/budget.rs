//! One memory budget for the whole process: every record fetched, buffered or in a batch being
//! cleaned and written holds a share of it until its batch is committed. When the budget is spent,
//! the shard consumers wait before they read on: a backlog never grows the process without limit,
//! and nothing is dropped.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// What one byte of record data costs in memory while its batch is in flight: the record itself,
/// its decoded rows and the cleaned rows written to Parquet (measured: see README, Performance).
pub const FOOTPRINT: usize = 3;

/// The default budget (`engine.memory_budget`): with the engine's own needs, a process that
/// drains a backlog of three streams stays under 256 MiB (see README, Performance).
pub const DEFAULT_MEMORY_BUDGET: usize = 128 * 1024 * 1024;

/// The budget's unit: permits are KiB, so that a `u32` permit count covers any response.
const UNIT: usize = 1024;

/// The process's memory budget for records in flight (shared by every stream).
#[derive(Debug, Clone)]
pub struct MemoryBudget {
    permits: Arc<Semaphore>,
    total_units: u32,
}

/// A share of the budget, given back when dropped (with the batch that holds its records).
#[derive(Debug, Default)]
pub struct BudgetLease {
    permit: Option<OwnedSemaphorePermit>,
}

impl MemoryBudget {
    /// A budget of `bytes` for records in flight, each byte of record data counted
    /// [`FOOTPRINT`] times.
    pub fn new(bytes: usize) -> Self {
        let total_units = u32::try_from(bytes.div_ceil(UNIT).max(1)).unwrap_or(u32::MAX);
        Self {
            permits: Arc::new(Semaphore::new(total_units as usize)),
            total_units,
        }
    }

    /// How many bytes of record data the whole budget holds.
    pub fn record_bytes(&self) -> usize {
        self.total_units as usize * UNIT / FOOTPRINT
    }

    /// Takes the share of `record_bytes` bytes of records, waiting while the budget is spent.
    /// Records larger than the whole budget take all of it (they wait until everything else is
    /// given back): a single huge record still goes through. Waiters are served in order, so a
    /// large share is not starved by small ones.
    pub async fn reserve(&self, record_bytes: usize) -> BudgetLease {
        let units = (record_bytes * FOOTPRINT).div_ceil(UNIT);
        let units = u32::try_from(units)
            .unwrap_or(u32::MAX)
            .min(self.total_units);
        if units == 0 {
            return BudgetLease { permit: None };
        }
        // The semaphore is never closed, so acquiring only fails if it were.
        let permit = Arc::clone(&self.permits)
            .acquire_many_owned(units)
            .await
            .ok();
        BudgetLease { permit }
    }

    /// Takes what is left of the share of `record_bytes` bytes of records, without waiting: for
    /// records already in memory (a replayed batch), which waiting would not make smaller.
    pub fn take_available(&self, record_bytes: usize) -> BudgetLease {
        let wanted = (record_bytes * FOOTPRINT).div_ceil(UNIT);
        let units = wanted.min(self.permits.available_permits());
        let permit = u32::try_from(units)
            .ok()
            .filter(|&units| units > 0)
            .and_then(|units| Arc::clone(&self.permits).try_acquire_many_owned(units).ok());
        BudgetLease { permit }
    }

    /// Less than a quarter of the budget is left: batches should be cut now rather than wait.
    pub fn under_pressure(&self) -> bool {
        self.permits.available_permits() < self.total_units as usize / 4
    }

    /// The bytes of the budget in use now (record data times [`FOOTPRINT`]).
    #[cfg(test)]
    fn in_use(&self) -> usize {
        (self.total_units as usize - self.permits.available_permits()) * UNIT
    }
}

impl BudgetLease {
    /// Splits off the share of `record_bytes` bytes of records (at most all of this one).
    pub fn split_off(&mut self, record_bytes: usize) -> BudgetLease {
        let units = (record_bytes * FOOTPRINT).div_ceil(UNIT);
        let permit = self.permit.as_mut().and_then(|permit| {
            let units = units.min(permit.num_permits());
            if units == permit.num_permits() {
                None
            } else {
                permit.split(units)
            }
        });
        match permit {
            Some(permit) => BudgetLease {
                permit: Some(permit),
            },
            // The whole share: this lease is left empty.
            None => BudgetLease {
                permit: self.permit.take(),
            },
        }
    }

    /// Adds `other`'s share to this one.
    pub fn merge(&mut self, other: BudgetLease) {
        match (&mut self.permit, other.permit) {
            (Some(mine), Some(theirs)) => mine.merge(theirs),
            (mine @ None, theirs) => *mine = theirs,
            (Some(_), None) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_spent_budget_makes_readers_wait_until_a_batch_is_committed() {
        let budget = MemoryBudget::new(3 * 1024 * 1024);
        assert_eq!(budget.record_bytes(), 1024 * 1024);
        let batch = budget.reserve(800 * 1024).await;
        assert!(budget.under_pressure());
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.reserve(400 * 1024).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiting.is_finished(),
            "the budget was spent: the reader must wait"
        );
        drop(batch);
        let lease = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the committed batch gave its share back")
            .unwrap();
        assert_eq!(budget.in_use(), 400 * 1024 * FOOTPRINT);
        drop(lease);
        assert_eq!(budget.in_use(), 0);
    }

    #[tokio::test]
    async fn a_record_larger_than_the_budget_takes_all_of_it_once_the_rest_is_back() {
        let budget = MemoryBudget::new(3 * 1024 * 1024);
        let small = budget.reserve(10 * 1024).await;
        let huge = tokio::spawn({
            let budget = budget.clone();
            async move { budget.reserve(50 * 1024 * 1024).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!huge.is_finished());
        // A later small share queues behind the huge one instead of starving it.
        let later = tokio::spawn({
            let budget = budget.clone();
            async move { budget.reserve(1024).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!later.is_finished());
        drop(small);
        let huge = tokio::time::timeout(Duration::from_secs(5), huge)
            .await
            .expect("the huge record goes through")
            .unwrap();
        assert_eq!(budget.in_use(), 3 * 1024 * 1024);
        drop(huge);
        tokio::time::timeout(Duration::from_secs(5), later)
            .await
            .expect("then the small one")
            .unwrap();
    }

    #[tokio::test]
    async fn a_split_lease_gives_back_each_part_when_it_is_dropped() {
        let budget = MemoryBudget::new(3 * 1024 * 1024);
        let mut rest = budget.reserve(300 * 1024).await;
        let head = rest.split_off(100 * 1024);
        drop(rest);
        assert_eq!(budget.in_use(), 100 * 1024 * FOOTPRINT);
        let mut head = head;
        let all = head.split_off(10 * 1024 * 1024);
        drop(head);
        assert_eq!(budget.in_use(), 100 * 1024 * FOOTPRINT);
        drop(all);
        assert_eq!(budget.in_use(), 0);
    }

    #[tokio::test]
    async fn records_already_in_memory_take_what_is_left_without_waiting() {
        let budget = MemoryBudget::new(3 * 1024 * 1024);
        let most = budget.reserve(900 * 1024).await;
        let replayed = budget.take_available(500 * 1024);
        assert_eq!(budget.in_use(), 3 * 1024 * 1024, "all that was left");
        drop((most, replayed));
        assert_eq!(budget.in_use(), 0);
    }

    #[tokio::test]
    async fn merged_leases_give_back_their_sum() {
        let budget = MemoryBudget::new(3 * 1024 * 1024);
        let mut lease = BudgetLease::default();
        lease.merge(budget.reserve(100 * 1024).await);
        lease.merge(budget.reserve(200 * 1024).await);
        lease.merge(BudgetLease::default());
        assert_eq!(budget.in_use(), 300 * 1024 * FOOTPRINT);
        drop(lease);
        assert_eq!(budget.in_use(), 0);
    }
}
