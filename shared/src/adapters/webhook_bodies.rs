//! Webhook bodies too large for a queue message (S3): `deliveries/` in the recordings bucket,
//! KMS-encrypted like every object there. webhook-ingest writes one, the worker reads it and
//! deletes it once the delivery is processed; the bucket's lifecycle rule `expire-deliveries`
//! (`infra/template.yaml`) removes any left behind.

use crate::ports::{PortError, WebhookBodies};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;

/// The only prefix these objects live under: a key outside it is refused, so a queue message
/// can never make the worker read or delete a recording or an export.
pub const PREFIX: &str = "deliveries/";

use super::recordings::aws;

#[derive(Clone, Debug)]
pub struct WebhookBodyBucket {
    client: aws_sdk_s3::Client,
    bucket: String,
    /// The customer-managed key; `None` uses the bucket's default KMS key.
    kms_key_id: Option<String>,
}

impl WebhookBodyBucket {
    pub fn new(client: aws_sdk_s3::Client, bucket: impl Into<String>, kms_key_id: Option<String>) -> Self {
        Self { client, bucket: bucket.into(), kms_key_id }
    }

    fn checked(key: &str) -> Result<&str, PortError> {
        if key.starts_with(PREFIX) && !key.contains("..") {
            Ok(key)
        } else {
            Err(PortError::Invalid(format!("not a webhook body's key: {key}")))
        }
    }
}

impl WebhookBodies for WebhookBodyBucket {
    async fn put_body(&self, body: &[u8]) -> Result<String, PortError> {
        // A random name: the key says nothing about the merchant or the shopper.
        let key = format!("{PREFIX}{}", uuid::Uuid::new_v4().simple());
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .content_type("application/octet-stream")
            .server_side_encryption(ServerSideEncryption::AwsKms)
            .set_ssekms_key_id(self.kms_key_id.clone())
            .body(ByteStream::from(body.to_vec()))
            .send()
            .await
            .map_err(|e| aws("PutObject", e))?;
        Ok(key)
    }

    async fn get_body(&self, key: &str) -> Result<Option<Vec<u8>>, PortError> {
        let out = match self.client.get_object().bucket(&self.bucket).key(Self::checked(key)?).send().await {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => return Ok(None),
            Err(e) => return Err(aws("GetObject", e)),
        };
        let bytes =
            out.body.collect().await.map_err(|e| {
                PortError::service("S3", "GetObject", "ReadBody", crate::ports::ErrorKind::Transient, e)
            })?;
        Ok(Some(bytes.into_bytes().to_vec()))
    }

    async fn delete_body(&self, key: &str) -> Result<(), PortError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(Self::checked(key)?)
            .send()
            .await
            .map_err(|e| aws("DeleteObject", e))?;
        Ok(())
    }
}
