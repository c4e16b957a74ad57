//! The AWS resources `infra/template.yaml` defines, created on the local AWS API (moto).
//! A test compares these specs with the template so the two cannot drift.

use aws_config::SdkConfig;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType,
    PointInTimeRecoverySpecification, Projection, ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};
use aws_sdk_s3::types::{
    BucketLifecycleConfiguration, ExpirationStatus, LifecycleExpiration, LifecycleRule, LifecycleRuleFilter,
    PublicAccessBlockConfiguration, ServerSideEncryption, ServerSideEncryptionByDefault,
    ServerSideEncryptionConfiguration, ServerSideEncryptionRule,
};
use aws_sdk_sqs::types::QueueAttributeName;
use callfy_shared::config::local_defaults;
use thiserror::Error;

#[derive(Debug, Error)]
#[error("creating {resource} failed: {message}")]
pub struct ResourceError {
    pub resource: String,
    pub message: String,
}

fn fail(resource: &str, e: impl std::fmt::Display) -> ResourceError {
    ResourceError { resource: resource.to_string(), message: e.to_string() }
}

pub struct GsiSpec {
    pub name: &'static str,
    pub hash: &'static str,
    pub range: &'static str,
    /// Only the keys are projected (an index that finds items, never serves them).
    pub keys_only: bool,
}

pub struct TableSpec {
    pub hash: &'static str,
    pub range: &'static str,
    pub gsis: &'static [GsiSpec],
    pub ttl_attribute: &'static str,
}

/// Every key attribute is a string.
pub const TABLE: TableSpec = TableSpec {
    hash: "pk",
    range: "sk",
    gsis: &[
        GsiSpec { name: "lookup", hash: "gsi1pk", range: "gsi1sk", keys_only: false },
        GsiSpec { name: "purge", hash: "purge_bucket", range: "purge_at", keys_only: false },
        GsiSpec { name: "tenant", hash: "tenant", range: "pk", keys_only: true },
    ],
    ttl_attribute: "expires_at",
};

impl TableSpec {
    /// Every key attribute of the table and its indexes, once each, in order of first use.
    pub fn attributes(&self) -> Vec<&'static str> {
        let mut attrs = vec![self.hash, self.range];
        for g in self.gsis {
            for a in [g.hash, g.range] {
                if !attrs.contains(&a) {
                    attrs.push(a);
                }
            }
        }
        attrs
    }
}

pub struct QueueSpec {
    pub visibility_timeout_seconds: u32,
    pub message_retention_seconds: u32,
    pub max_receive_count: u32,
    pub dlq_retention_seconds: u32,
}

pub const QUEUE: QueueSpec = QueueSpec {
    visibility_timeout_seconds: 180,
    message_retention_seconds: 345_600,
    max_receive_count: 10,
    dlq_retention_seconds: 1_209_600,
};

/// The recordings queue: a copy retries five times, then waits in its dead-letter queue (with an
/// alarm) while Twilio still holds the recording.
pub const RECORDINGS_QUEUE: QueueSpec = QueueSpec {
    visibility_timeout_seconds: 180,
    message_retention_seconds: 345_600,
    max_receive_count: 5,
    dlq_retention_seconds: 1_209_600,
};

pub struct BucketSpec {
    pub recordings_prefix: &'static str,
    pub expiration_days: i32,
    /// Data-subject exports: a merchant fetches one within days; none is kept for long.
    pub exports_prefix: &'static str,
    pub exports_expiration_days: i32,
    /// Webhook bodies too large for a queue message: the worker deletes each once its delivery
    /// is processed; this removes any left behind (they hold personal data).
    pub deliveries_prefix: &'static str,
    pub deliveries_expiration_days: i32,
}

pub const BUCKET: BucketSpec = BucketSpec {
    recordings_prefix: "recordings/",
    expiration_days: 760,
    exports_prefix: "exports/",
    exports_expiration_days: 30,
    deliveries_prefix: callfy_shared::adapters::webhook_bodies::PREFIX,
    deliveries_expiration_days: 2,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceNames {
    pub table: String,
    pub queue: String,
    pub dlq: String,
    pub recordings_queue: String,
    pub recordings_dlq: String,
    pub bucket: String,
}

impl Default for ResourceNames {
    fn default() -> Self {
        Self {
            table: local_defaults::TABLE_NAME.into(),
            queue: local_defaults::QUEUE_NAME.into(),
            dlq: local_defaults::DLQ_NAME.into(),
            recordings_queue: local_defaults::RECORDINGS_QUEUE_NAME.into(),
            recordings_dlq: local_defaults::RECORDINGS_DLQ_NAME.into(),
            bucket: local_defaults::BUCKET_NAME.into(),
        }
    }
}

impl ResourceNames {
    /// Unique names, so parallel tests never share state.
    pub fn unique(prefix: &str) -> Self {
        let id = &uuid::Uuid::new_v4().simple().to_string()[..12];
        Self {
            table: format!("{prefix}-{id}"),
            queue: format!("{prefix}-q-{id}"),
            dlq: format!("{prefix}-dlq-{id}"),
            recordings_queue: format!("{prefix}-rq-{id}"),
            recordings_dlq: format!("{prefix}-rdlq-{id}"),
            bucket: format!("{prefix}-rec-{id}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Resources {
    pub names: ResourceNames,
    pub queue_url: String,
    pub dlq_url: String,
    pub recordings_queue_url: String,
    pub recordings_dlq_url: String,
}

/// Creates whatever is missing; existing resources are left as they are.
pub async fn ensure(sdk: &SdkConfig, names: &ResourceNames) -> Result<Resources, ResourceError> {
    ensure_table(&aws_sdk_dynamodb::Client::new(sdk), &names.table).await?;
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let (queue_url, dlq_url) = ensure_queues(&sqs, &names.queue, &names.dlq, &QUEUE).await?;
    let (recordings_queue_url, recordings_dlq_url) =
        ensure_queues(&sqs, &names.recordings_queue, &names.recordings_dlq, &RECORDINGS_QUEUE).await?;
    let s3 = aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(sdk).force_path_style(true).build());
    ensure_bucket(&s3, &names.bucket).await?;
    Ok(Resources { names: names.clone(), queue_url, dlq_url, recordings_queue_url, recordings_dlq_url })
}

fn key(name: &str, kind: KeyType) -> Result<KeySchemaElement, ResourceError> {
    KeySchemaElement::builder().attribute_name(name).key_type(kind).build().map_err(|e| fail("table", e))
}

async fn ensure_table(ddb: &aws_sdk_dynamodb::Client, table: &str) -> Result<(), ResourceError> {
    if ddb.describe_table().table_name(table).send().await.is_ok() {
        return Ok(());
    }
    let attrs = TABLE.attributes();
    let mut req = ddb
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key(TABLE.hash, KeyType::Hash)?)
        .key_schema(key(TABLE.range, KeyType::Range)?);
    for a in attrs {
        req = req.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(a)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(|e| fail("table", e))?,
        );
    }
    for g in TABLE.gsis {
        req = req.global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(g.name)
                .key_schema(key(g.hash, KeyType::Hash)?)
                .key_schema(key(g.range, KeyType::Range)?)
                .projection(
                    Projection::builder()
                        .projection_type(if g.keys_only { ProjectionType::KeysOnly } else { ProjectionType::All })
                        .build(),
                )
                .build()
                .map_err(|e| fail("table", e))?,
        );
    }
    req.send().await.map_err(|e| fail(table, aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
    ddb.update_time_to_live()
        .table_name(table)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .attribute_name(TABLE.ttl_attribute)
                .enabled(true)
                .build()
                .map_err(|e| fail("table", e))?,
        )
        .send()
        .await
        .map_err(|e| fail(table, aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
    ddb.update_continuous_backups()
        .table_name(table)
        .point_in_time_recovery_specification(
            PointInTimeRecoverySpecification::builder()
                .point_in_time_recovery_enabled(true)
                .build()
                .map_err(|e| fail("table", e))?,
        )
        .send()
        .await
        .map_err(|e| fail(table, aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
    Ok(())
}

async fn ensure_queues(
    sqs: &aws_sdk_sqs::Client,
    queue_name: &str,
    dlq_name: &str,
    spec: &QueueSpec,
) -> Result<(String, String), ResourceError> {
    let dlq = sqs
        .create_queue()
        .queue_name(dlq_name)
        .attributes(QueueAttributeName::MessageRetentionPeriod, spec.dlq_retention_seconds.to_string())
        .attributes(QueueAttributeName::SqsManagedSseEnabled, "true")
        .send()
        .await
        .map_err(|e| fail(dlq_name, aws_sdk_sqs::error::DisplayErrorContext(e)))?;
    let dlq_url = dlq.queue_url().unwrap_or_default().to_string();
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| fail(dlq_name, aws_sdk_sqs::error::DisplayErrorContext(e)))?;
    let dlq_arn = attrs.attributes().and_then(|a| a.get(&QueueAttributeName::QueueArn)).cloned().unwrap_or_default();
    let redrive = serde_json::json!({ "deadLetterTargetArn": dlq_arn, "maxReceiveCount": spec.max_receive_count });
    let queue = sqs
        .create_queue()
        .queue_name(queue_name)
        .attributes(QueueAttributeName::VisibilityTimeout, spec.visibility_timeout_seconds.to_string())
        .attributes(QueueAttributeName::MessageRetentionPeriod, spec.message_retention_seconds.to_string())
        .attributes(QueueAttributeName::SqsManagedSseEnabled, "true")
        .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
        .send()
        .await
        .map_err(|e| fail(queue_name, aws_sdk_sqs::error::DisplayErrorContext(e)))?;
    Ok((queue.queue_url().unwrap_or_default().to_string(), dlq_url))
}

async fn ensure_bucket(s3: &aws_sdk_s3::Client, bucket: &str) -> Result<(), ResourceError> {
    if s3.head_bucket().bucket(bucket).send().await.is_ok() {
        return Ok(());
    }
    let err = |e| fail(bucket, e);
    s3.create_bucket()
        .bucket(bucket)
        .send()
        .await
        .map_err(|e| err(aws_sdk_s3::error::DisplayErrorContext(e).to_string()))?;
    s3.put_public_access_block()
        .bucket(bucket)
        .public_access_block_configuration(
            PublicAccessBlockConfiguration::builder()
                .block_public_acls(true)
                .block_public_policy(true)
                .ignore_public_acls(true)
                .restrict_public_buckets(true)
                .build(),
        )
        .send()
        .await
        .map_err(|e| err(aws_sdk_s3::error::DisplayErrorContext(e).to_string()))?;
    s3.put_bucket_encryption()
        .bucket(bucket)
        .server_side_encryption_configuration(
            ServerSideEncryptionConfiguration::builder()
                .rules(
                    ServerSideEncryptionRule::builder()
                        .apply_server_side_encryption_by_default(
                            ServerSideEncryptionByDefault::builder()
                                .sse_algorithm(ServerSideEncryption::AwsKms)
                                .build()
                                .map_err(|e| err(e.to_string()))?,
                        )
                        .bucket_key_enabled(true)
                        .build(),
                )
                .build()
                .map_err(|e| err(e.to_string()))?,
        )
        .send()
        .await
        .map_err(|e| err(aws_sdk_s3::error::DisplayErrorContext(e).to_string()))?;
    s3.put_bucket_lifecycle_configuration()
        .bucket(bucket)
        .lifecycle_configuration(
            BucketLifecycleConfiguration::builder()
                .rules(
                    LifecycleRule::builder()
                        .id("expire-recordings")
                        .status(ExpirationStatus::Enabled)
                        .filter(LifecycleRuleFilter::builder().prefix(BUCKET.recordings_prefix).build())
                        .expiration(LifecycleExpiration::builder().days(BUCKET.expiration_days).build())
                        .build()
                        .map_err(|e| err(e.to_string()))?,
                )
                .rules(
                    LifecycleRule::builder()
                        .id("expire-exports")
                        .status(ExpirationStatus::Enabled)
                        .filter(LifecycleRuleFilter::builder().prefix(BUCKET.exports_prefix).build())
                        .expiration(LifecycleExpiration::builder().days(BUCKET.exports_expiration_days).build())
                        .build()
                        .map_err(|e| err(e.to_string()))?,
                )
                .rules(
                    LifecycleRule::builder()
                        .id("expire-deliveries")
                        .status(ExpirationStatus::Enabled)
                        .filter(LifecycleRuleFilter::builder().prefix(BUCKET.deliveries_prefix).build())
                        .expiration(LifecycleExpiration::builder().days(BUCKET.deliveries_expiration_days).build())
                        .build()
                        .map_err(|e| err(e.to_string()))?,
                )
                .build()
                .map_err(|e| err(e.to_string()))?,
        )
        .send()
        .await
        .map_err(|e| err(aws_sdk_s3::error::DisplayErrorContext(e).to_string()))?;
    Ok(())
}
