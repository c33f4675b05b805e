//! `[s3]` in the settings file: where the offsite tier is and how objects
//! are written there.

use serde::{Deserialize, Serialize};

/// `[s3]` in the settings file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct S3Settings {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix inside the bucket (`""` or ending in `/`).
    #[serde(default)]
    pub prefix: String,
    /// Region [default: from the AWS environment/profile, else us-east-1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Endpoint URL for S3-compatible stores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Path-style addressing [default: true when an endpoint is set].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_style: Option<bool>,
    /// Storage class for packs and manifests (e.g. `STANDARD_IA`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    /// Object Lock mode: `governance` or `compliance`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_lock_mode: Option<String>,
    /// Object Lock retention in days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_lock_days: Option<u32>,
    /// How long a backup keeps retrying uploads that failed, with backoff,
    /// before it leaves them pending for `coffer sync` (humantime)
    /// [default: 2m].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_uploads_for: Option<String>,
}

impl S3Settings {
    /// Parses `s3://BUCKET/PREFIX`.
    ///
    /// # Errors
    /// A message saying what an S3 URL looks like.
    pub fn from_url(url: &str) -> Result<Self, String> {
        let rest = url.strip_prefix("s3://").ok_or_else(|| {
            format!("{url:?} is not an S3 URL; write s3://BUCKET or s3://BUCKET/PREFIX")
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("{url:?} names no bucket; write s3://BUCKET/PREFIX"));
        }
        let prefix = prefix.trim_matches('/');
        Ok(S3Settings {
            bucket: bucket.to_string(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
            region: None,
            endpoint: None,
            path_style: None,
            storage_class: None,
            object_lock_mode: None,
            object_lock_days: None,
            retry_uploads_for: None,
        })
    }

    /// `s3://bucket/prefix` for messages.
    pub fn url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }
}
