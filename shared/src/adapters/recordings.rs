//! The recordings bucket (S3): call recordings under `recordings/`, encrypted with KMS.

use crate::domain::retention::HELD_PREFIX;
use crate::ports::{PortError, RecordingFiles};
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;
use std::path::Path;

/// An S3 SDK error as a `PortError` (shared with the webhook bodies' bucket).
pub(super) fn aws<E, R>(op: &'static str, e: aws_sdk_s3::error::SdkError<E, R>) -> PortError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    super::aws::sdk_error("S3", op, e)
}

#[derive(Clone, Debug)]
pub struct RecordingBucket {
    client: aws_sdk_s3::Client,
    bucket: String,
    /// The customer-managed key; `None` uses the bucket's default KMS key.
    kms_key_id: Option<String>,
}

impl RecordingBucket {
    pub fn new(client: aws_sdk_s3::Client, bucket: impl Into<String>, kms_key_id: Option<String>) -> Self {
        Self { client, bucket: bucket.into(), kms_key_id }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// A link to read `key` for `valid_for` (a data-subject export's recordings and file); a
    /// recording under a legal hold is read where the hold keeps it.
    pub async fn presign_get(&self, key: &str, valid_for: std::time::Duration) -> Result<String, PortError> {
        let held = format!("{HELD_PREFIX}{key}");
        let key = if key.starts_with("recordings/") && !self.exists(key).await? && self.exists(&held).await? {
            held.as_str()
        } else {
            key
        };
        let config = aws_sdk_s3::presigning::PresigningConfig::expires_in(valid_for)
            .map_err(|e| PortError::Invalid(e.to_string()))?;
        let req = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(config)
            .await
            .map_err(|e| aws("GetObject (presign)", e))?;
        Ok(req.uri().to_string())
    }

    /// Writes a JSON document (a data-subject export), KMS-encrypted.
    pub async fn put_json(&self, key: &str, body: Vec<u8>) -> Result<(), PortError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type("application/json")
            .server_side_encryption(ServerSideEncryption::AwsKms)
            .set_ssekms_key_id(self.kms_key_id.clone())
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| aws("PutObject", e))?;
        Ok(())
    }

    /// Deletes the first listing page under `prefix`; how many, and whether more remain.
    pub async fn delete_prefix_page(&self, prefix: &str) -> Result<(usize, bool), PortError> {
        let page = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .send()
            .await
            .map_err(|e| aws("ListObjectsV2", e))?;
        let keys: Vec<String> = page.contents().iter().filter_map(|o| o.key().map(str::to_string)).collect();
        self.delete_keys(&keys).await?;
        Ok((keys.len(), page.is_truncated().unwrap_or(false)))
    }

    async fn exists(&self, key: &str) -> Result<bool, PortError> {
        match self.client.head_object().bucket(&self.bucket).key(key).send().await {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_not_found()) => Ok(false),
            // Without ListBucket, S3 answers a missing key with 403: absent all the same.
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 403) => Ok(false),
            Err(e) => Err(aws("HeadObject", e)),
        }
    }

    /// Moves every object under `from` to the same name under `to` (copied, encrypted like the
    /// original, then deleted); how many. A legal hold moves an account's recordings out of the
    /// lifecycle rule's reach and back: S3 lifecycle filters cannot exclude a tag.
    pub async fn move_prefix(&self, from: &str, to: &str) -> Result<usize, PortError> {
        let mut keys = Vec::new();
        let mut pages = self.client.list_objects_v2().bucket(&self.bucket).prefix(from).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| aws("ListObjectsV2", e))?;
            keys.extend(page.contents().iter().filter_map(|o| o.key().map(str::to_string)));
        }
        for key in &keys {
            let target = format!("{to}{}", &key[from.len()..]);
            let source = format!("{}/{}", self.bucket, urlencoding(key));
            self.client
                .copy_object()
                .bucket(&self.bucket)
                .key(&target)
                .copy_source(source)
                .server_side_encryption(ServerSideEncryption::AwsKms)
                .set_ssekms_key_id(self.kms_key_id.clone())
                .send()
                .await
                .map_err(|e| aws("CopyObject", e))?;
        }
        // Exactly the originals (`delete_keys` would take the held copies with them).
        self.delete_objects(&keys).await?;
        Ok(keys.len())
    }

    /// Deletes objects (the purger and the deletion path only), up to 1000 a request. A
    /// recording's copy under a legal hold's prefix goes with it.
    pub async fn delete_keys(&self, keys: &[String]) -> Result<(), PortError> {
        let with_held: Vec<String> = keys
            .iter()
            .flat_map(|k| {
                let held = k.starts_with("recordings/").then(|| format!("{HELD_PREFIX}{k}"));
                std::iter::once(k.clone()).chain(held)
            })
            .collect();
        self.delete_objects(&with_held).await
    }

    async fn delete_objects(&self, keys: &[String]) -> Result<(), PortError> {
        use aws_sdk_s3::types::{Delete, ObjectIdentifier};
        for chunk in keys.chunks(1000) {
            let objects: Vec<ObjectIdentifier> =
                chunk.iter().filter_map(|k| ObjectIdentifier::builder().key(k).build().ok()).collect();
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| PortError::Invalid(e.to_string()))?;
            let out = self
                .client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| aws("DeleteObjects", e))?;
            if let Some(err) = out.errors().first() {
                let code = err.code().unwrap_or("unknown").to_string();
                let kind = super::aws::code_kind(&code);
                let message = err.message().unwrap_or_default().to_string();
                return Err(PortError::service("S3", "DeleteObjects", code, kind, message));
            }
        }
        Ok(())
    }

    /// Streams a local file to `key`, KMS-encrypted, with `metadata`.
    pub async fn put_file(&self, key: &str, path: &Path, metadata: &[(&str, String)]) -> Result<(), PortError> {
        let body = ByteStream::from_path(path).await.map_err(|e| PortError::File(std::io::Error::other(e)))?;
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type("audio/wav")
            .server_side_encryption(ServerSideEncryption::AwsKms)
            .set_ssekms_key_id(self.kms_key_id.clone())
            .body(body);
        for (k, v) in metadata {
            req = req.metadata(*k, v);
        }
        req.send().await.map_err(|e| aws("PutObject", e))?;
        Ok(())
    }
}

/// An S3 key in a `CopySource` (path segments percent-encoded, slashes kept).
fn urlencoding(key: &str) -> String {
    key.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl RecordingFiles for RecordingBucket {
    async fn move_prefix(&self, from: &str, to: &str) -> Result<usize, PortError> {
        RecordingBucket::move_prefix(self, from, to).await
    }
    async fn presign_get(&self, key: &str, valid_for: std::time::Duration) -> Result<String, PortError> {
        RecordingBucket::presign_get(self, key, valid_for).await
    }
    async fn put_json(&self, key: &str, body: Vec<u8>) -> Result<(), PortError> {
        RecordingBucket::put_json(self, key, body).await
    }
    async fn delete_prefix_page(&self, prefix: &str) -> Result<(usize, bool), PortError> {
        RecordingBucket::delete_prefix_page(self, prefix).await
    }
    async fn delete_keys(&self, keys: &[String]) -> Result<(), PortError> {
        RecordingBucket::delete_keys(self, keys).await
    }
    async fn put_file(&self, key: &str, path: &Path, metadata: &[(&str, String)]) -> Result<(), PortError> {
        RecordingBucket::put_file(self, key, path, metadata).await
    }
}
