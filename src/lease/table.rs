//! The lease table in DynamoDB: created when missing, one item per shard, and conditional writes
//! for every change of ownership.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ReturnValue,
    ScalarAttributeType, TableStatus,
};

const KEY: &str = "leaseKey";
const OWNER: &str = "leaseOwner";
const COUNTER: &str = "leaseCounter";

/// One shard's lease as last read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// `<stream>/<shardId>`.
    pub key: String,
    /// The worker holding it; `None` when free.
    pub owner: Option<String>,
    /// Incremented by every take, renewal and release.
    pub counter: u64,
}

/// A lease table call that failed (an outside service, or the user's settings).
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// DynamoDB refused or did not answer.
    #[error("DynamoDB {operation} on the lease table `{table}` failed: {message}")]
    Call {
        /// The operation.
        operation: &'static str,
        /// The lease table.
        table: String,
        /// What DynamoDB said, in one line.
        message: String,
    },
    /// An item without the attributes of a lease (another program writes to the table).
    #[error("the lease table `{table}` holds an item that is not a lease: {item}")]
    NotALease {
        /// The lease table.
        table: String,
        /// The item, as read.
        item: String,
    },
    /// The table did not become ACTIVE.
    #[error("the lease table `{table}` is not ACTIVE after {waited:?}")]
    NotActive {
        /// The lease table.
        table: String,
        /// How long it was waited for.
        waited: Duration,
    },
}

/// The lease table of one pipeline.
#[derive(Debug, Clone)]
pub struct LeaseTable {
    client: Client,
    table: String,
}

impl LeaseTable {
    /// Opens the table named `table`, creating it (on-demand capacity) when it does not exist, and
    /// waits until it is ACTIVE.
    pub async fn open(client: Client, table: &str) -> Result<Self, LeaseError> {
        let leases = Self {
            client,
            table: table.to_owned(),
        };
        let created = leases
            .client
            .create_table()
            .table_name(table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(KEY)
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .map_err(|e| leases.error("CreateTable", e.to_string()))?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(KEY)
                    .key_type(KeyType::Hash)
                    .build()
                    .map_err(|e| leases.error("CreateTable", e.to_string()))?,
            )
            .send()
            .await;
        match created {
            Ok(_) => tracing::info!(table, "created the lease table"),
            Err(e) if e.code() == Some("ResourceInUseException") => {}
            Err(e) => return Err(leases.call_error("CreateTable", &e)),
        }
        leases.wait_active(Duration::from_secs(60)).await?;
        Ok(leases)
    }

    /// The table named `table` when it exists, without creating it (for `leases`, which only
    /// reads). `None` when DynamoDB does not know it.
    pub async fn existing(client: Client, table: &str) -> Result<Option<Self>, LeaseError> {
        let leases = Self {
            client,
            table: table.to_owned(),
        };
        let described = leases
            .client
            .describe_table()
            .table_name(table)
            .send()
            .await;
        match described {
            Ok(_) => Ok(Some(leases)),
            Err(e) if e.code() == Some("ResourceNotFoundException") => Ok(None),
            Err(e) => Err(leases.call_error("DescribeTable", &e)),
        }
    }

    async fn wait_active(&self, limit: Duration) -> Result<(), LeaseError> {
        let started = tokio::time::Instant::now();
        loop {
            let described = self
                .client
                .describe_table()
                .table_name(&self.table)
                .send()
                .await
                .map_err(|e| self.call_error("DescribeTable", &e))?;
            let status = described.table().and_then(|t| t.table_status());
            if status == Some(&TableStatus::Active) {
                return Ok(());
            }
            if started.elapsed() >= limit {
                return Err(LeaseError::NotActive {
                    table: self.table.clone(),
                    waited: limit,
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The table's name.
    pub fn name(&self) -> &str {
        &self.table
    }

    /// Adds a free lease for `key` unless there is one. `true` when it was added.
    pub async fn ensure(&self, key: &str) -> Result<bool, LeaseError> {
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(KEY, AttributeValue::S(key.to_owned()))
            .item(COUNTER, AttributeValue::N("0".to_owned()))
            .condition_expression("attribute_not_exists(#key)")
            .expression_attribute_names("#key", KEY)
            .send()
            .await;
        match put {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failure(&e) => Ok(false),
            Err(e) => Err(self.call_error("PutItem", &e)),
        }
    }

    /// Every lease, read consistently, in key order.
    pub async fn list(&self) -> Result<Vec<Lease>, LeaseError> {
        let mut leases = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| self.call_error("Scan", &e))?;
            for item in page.items() {
                leases.push(self.lease(item)?);
            }
            match page.last_evaluated_key() {
                Some(key) if !key.is_empty() => start = Some(key.clone()),
                _ => break,
            }
        }
        leases.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(leases)
    }

    /// Takes `lease` for `worker`, if it is still as seen (same counter, same owner). `None` when
    /// another worker changed it first.
    pub async fn take(&self, lease: &Lease, worker: &str) -> Result<Option<Lease>, LeaseError> {
        let request = self
            .update(lease)
            .update_expression("SET #owner = :me, #counter = #counter + :one")
            .expression_attribute_values(":me", AttributeValue::S(worker.to_owned()));
        let request = match &lease.owner {
            Some(owner) => request
                .condition_expression("#counter = :seen AND #owner = :owner")
                .expression_attribute_values(":owner", AttributeValue::S(owner.clone())),
            None => {
                request.condition_expression("#counter = :seen AND attribute_not_exists(#owner)")
            }
        };
        self.conditional("UpdateItem", request).await
    }

    /// Renews `worker`'s `lease` (moves its counter). `None` when the lease is no longer as seen:
    /// another worker took it.
    pub async fn renew(&self, lease: &Lease, worker: &str) -> Result<Option<Lease>, LeaseError> {
        let request = self
            .update(lease)
            .update_expression("SET #counter = #counter + :one")
            .condition_expression("#counter = :seen AND #owner = :me")
            .expression_attribute_values(":me", AttributeValue::S(worker.to_owned()));
        self.conditional("UpdateItem", request).await
    }

    /// Gives `worker`'s `lease` up, so that another worker takes it at once. `None` when it was
    /// no longer `worker`'s.
    pub async fn release(&self, lease: &Lease, worker: &str) -> Result<Option<Lease>, LeaseError> {
        let request = self
            .update(lease)
            .update_expression("REMOVE #owner SET #counter = #counter + :one")
            .condition_expression("#counter = :seen AND #owner = :me")
            .expression_attribute_values(":me", AttributeValue::S(worker.to_owned()));
        self.conditional("UpdateItem", request).await
    }

    /// Deletes `worker`'s item `lease` (its presence, at a clean shutdown). `false` when it was no
    /// longer as seen.
    pub async fn remove(&self, lease: &Lease, worker: &str) -> Result<bool, LeaseError> {
        let deleted = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(KEY, AttributeValue::S(lease.key.clone()))
            .condition_expression("#counter = :seen AND #owner = :me")
            .expression_attribute_names("#owner", OWNER)
            .expression_attribute_names("#counter", COUNTER)
            .expression_attribute_values(":seen", AttributeValue::N(lease.counter.to_string()))
            .expression_attribute_values(":me", AttributeValue::S(worker.to_owned()))
            .send()
            .await;
        match deleted {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failure(&e) => Ok(false),
            Err(e) => Err(self.call_error("DeleteItem", &e)),
        }
    }

    /// An UpdateItem of `lease` with the names and values every change uses.
    fn update(
        &self,
        lease: &Lease,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .key(KEY, AttributeValue::S(lease.key.clone()))
            .expression_attribute_names("#owner", OWNER)
            .expression_attribute_names("#counter", COUNTER)
            .expression_attribute_values(":seen", AttributeValue::N(lease.counter.to_string()))
            .expression_attribute_values(":one", AttributeValue::N("1".to_owned()))
            .return_values(ReturnValue::AllNew)
    }

    async fn conditional(
        &self,
        operation: &'static str,
        request: aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder,
    ) -> Result<Option<Lease>, LeaseError> {
        match request.send().await {
            Ok(output) => match output.attributes() {
                Some(item) => self.lease(item).map(Some),
                None => Err(self.error(operation, "no attributes in the answer".to_owned())),
            },
            Err(e) if is_condition_failure(&e) => Ok(None),
            Err(e) => Err(self.call_error(operation, &e)),
        }
    }

    fn lease(&self, item: &HashMap<String, AttributeValue>) -> Result<Lease, LeaseError> {
        let text = |name| item.get(name).and_then(|v| v.as_s().ok()).cloned();
        let counter = item
            .get(COUNTER)
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok());
        match (text(KEY), counter) {
            (Some(key), Some(counter)) => Ok(Lease {
                key,
                owner: text(OWNER),
                counter,
            }),
            _ => Err(LeaseError::NotALease {
                table: self.table.clone(),
                item: format!("{item:?}"),
            }),
        }
    }

    fn error(&self, operation: &'static str, message: String) -> LeaseError {
        LeaseError::Call {
            operation,
            table: self.table.clone(),
            message,
        }
    }

    fn call_error<E: ProvideErrorMetadata + std::error::Error + 'static>(
        &self,
        operation: &'static str,
        err: &SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>,
    ) -> LeaseError {
        tracing::debug!(
            operation,
            error = %aws_smithy_types::error::display::DisplayErrorContext(err),
            "the AWS SDK's full error"
        );
        let message = match err {
            SdkError::ServiceError(s) => format!(
                "{}: {}",
                s.err().code().unwrap_or("error"),
                s.err().message().unwrap_or("(no message)")
            ),
            _ => "DynamoDB could not be reached: check the lease table's endpoint and region"
                .to_owned(),
        };
        self.error(operation, message)
    }
}

fn is_condition_failure<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool {
    err.code() == Some("ConditionalCheckFailedException")
}
