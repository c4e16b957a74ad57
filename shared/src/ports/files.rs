//! The recordings bucket: call recordings, data-subject export files.

use super::PortError;
use std::future::Future;
use std::path::Path;

pub trait RecordingFiles: Send + Sync {
    /// A link to read `key` for `valid_for` (a data-subject export's recordings and file).
    fn presign_get(
        &self,
        key: &str,
        valid_for: std::time::Duration,
    ) -> impl Future<Output = Result<String, PortError>> + Send;
    /// Writes a JSON document (a data-subject export), encrypted at rest.
    fn put_json(&self, key: &str, body: Vec<u8>) -> impl Future<Output = Result<(), PortError>> + Send;
    /// Deletes one listing page (up to 1 000 objects) under `prefix`: how many, and whether
    /// more remain (an erasure looks at its deadline between pages).
    fn delete_prefix_page(&self, prefix: &str) -> impl Future<Output = Result<(usize, bool), PortError>> + Send;
    /// Moves every object under `from` to the same name under `to`; how many.
    fn move_prefix(&self, from: &str, to: &str) -> impl Future<Output = Result<usize, PortError>> + Send;
    /// Deletes objects (the purger and the deletion path only).
    fn delete_keys(&self, keys: &[String]) -> impl Future<Output = Result<(), PortError>> + Send;
    /// Stores a local file (a recording staged from the provider) under `key`, with `metadata`.
    fn put_file(
        &self,
        key: &str,
        path: &Path,
        metadata: &[(&str, String)],
    ) -> impl Future<Output = Result<(), PortError>> + Send;
}
