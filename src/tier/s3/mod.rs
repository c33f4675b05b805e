//! A tier in an S3 bucket (AWS S3 or any store speaking the same calls:
//! MinIO, Ceph, Garage, SeaweedFS, R2, B2).
//!
//! - Credentials come from the standard AWS chain (environment, shared
//!   profile, SSO, container and instance roles); they never appear in the
//!   settings unless the operator puts them in a profile, never in argv,
//!   logs or errors.
//! - Objects are written once: `PutObject` with `If-None-Match: *`; a `412`
//!   means the object exists (a no-op, not an overwrite). A store that
//!   answers `501 Not Implemented` to the condition is remembered, and from
//!   then on coffer HEADs before it PUTs: racy between two writers, but keys
//!   are content addresses, so a race can only rewrite identical bytes.
//! - With Object Lock configured, every object is written with a retention
//!   (governance or compliance mode, N days), so a stolen credential cannot
//!   delete history before its time; a refused delete is reported as
//!   "retained", which prune (later) treats as such.
//! - The SDK's standard retry mode retries throttling and 5xx with
//!   exponential backoff and jitter; connect and per-attempt timeouts bound
//!   a dead endpoint. Uploads stream from the spooled pack file; reads are
//!   ranged GETs through a seekable reader, so a restore that needs a few
//!   blobs of a pack fetches only those ranges.
//!
//! The trait is synchronous (the pipelines are threads); each call runs on a
//! small tokio runtime owned by the tier. Never call it from async code.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ObjectLockMode, StorageClass};

mod errors;
mod fetch;
mod markers;
mod reader;
mod retention;
mod settings;

pub use settings::S3Settings;

use super::{ObjectInfo, Put, ReadSeek, Removal, Tier, TierError};
use errors::{status, tier_error};
use reader::{RangeReader, S3Handle};

/// The S3 tier.
pub struct S3Tier {
    name: String,
    client: aws_sdk_s3::Client,
    rt: Arc<tokio::runtime::Runtime>,
    settings: S3Settings,
    lock: Option<(ObjectLockMode, u32)>,
    no_conditional_put: AtomicBool,
    /// Keys found under a delete marker (see [`markers`]).
    hidden: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

impl S3Tier {
    /// Connects (lazily: no request is made until the first call).
    ///
    /// # Errors
    /// [`TierError::Remote`] for invalid settings.
    pub fn new(name: &str, settings: &S3Settings) -> Result<Self, TierError> {
        let bad = |detail: String| TierError::Remote {
            tier: name.to_string(),
            op: "configure",
            key: settings.url(),
            detail,
        };
        let lock = match (&settings.object_lock_mode, settings.object_lock_days) {
            (None, None) => None,
            (Some(m), Some(d)) if d > 0 => Some((
                match m.to_ascii_lowercase().as_str() {
                    "governance" => ObjectLockMode::Governance,
                    "compliance" => ObjectLockMode::Compliance,
                    other => {
                        return Err(bad(format!(
                            "object_lock_mode {other:?} must be governance or compliance"
                        )))
                    }
                },
                d,
            )),
            _ => {
                return Err(bad(
                    "object lock needs both object_lock_mode and object_lock_days (> 0)".into(),
                ))
            }
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("s3-io")
            .enable_all()
            .build()
            .map_err(|e| bad(format!("cannot start the I/O runtime: {e}")))?;
        let s = settings.clone();
        let sdk = rt.block_on(async move {
            let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
                .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(4))
                .timeout_config(
                    aws_config::timeout::TimeoutConfig::builder()
                        .connect_timeout(Duration::from_secs(5))
                        .operation_attempt_timeout(Duration::from_secs(300))
                        .build(),
                );
            if let Some(r) = &s.region {
                loader = loader.region(aws_config::Region::new(r.clone()));
            }
            if let Some(e) = &s.endpoint {
                loader = loader.endpoint_url(e);
            }
            loader.load().await
        });
        let mut b = aws_sdk_s3::config::Builder::from(&sdk);
        if sdk.region().is_none() {
            b = b.region(aws_sdk_s3::config::Region::new("us-east-1"));
        }
        b = b.force_path_style(settings.path_style.unwrap_or(settings.endpoint.is_some()));
        Ok(S3Tier {
            name: name.to_string(),
            client: aws_sdk_s3::Client::from_conf(b.build()),
            rt: Arc::new(rt),
            settings: settings.clone(),
            lock,
            no_conditional_put: AtomicBool::new(false),
            hidden: Default::default(),
        })
    }

    /// The settings this tier was made from.
    pub fn settings(&self) -> &S3Settings {
        &self.settings
    }

    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.settings.prefix)
    }

    fn err<E: ProvideErrorMetadata + std::error::Error + 'static>(
        &self,
        op: &'static str,
        key: &str,
        e: SdkError<E>,
    ) -> TierError {
        tier_error(&self.name, &self.settings, op, key, &e)
    }

    fn put(&self, key: &str, body: Body<'_>) -> Result<Put, TierError> {
        if self.no_conditional_put.load(Ordering::Relaxed) && self.head(key)?.is_some() {
            return Ok(Put::AlreadyExisted);
        }
        let conditional = !self.no_conditional_put.load(Ordering::Relaxed);
        let r = self.rt.block_on(async {
            let stream = match &body {
                Body::Bytes(b) => ByteStream::from(b.to_vec()),
                Body::File(p) => ByteStream::from_path(p).await.map_err(|e| TierError::Io {
                    tier: self.name.clone(),
                    op: "put",
                    key: key.to_string(),
                    io: io::Error::other(e.to_string()),
                })?,
            };
            let mut req = self
                .client
                .put_object()
                .bucket(&self.settings.bucket)
                .key(self.full(key))
                .body(stream);
            if conditional {
                req = req.if_none_match("*");
            }
            if let Some(c) = &self.settings.storage_class {
                req = req.storage_class(StorageClass::from(c.as_str()));
            }
            // Locks, condemned marks and pins are coordination state that
            // must be deletable: only the vault's data gets a retention.
            let retained = !["locks/", "condemned/", "pins/"]
                .iter()
                .any(|p| key.starts_with(p));
            if let Some((mode, days)) = self.lock.as_ref().filter(|_| retained) {
                let until = SystemTime::now() + Duration::from_secs(u64::from(*days) * 86_400);
                req = req
                    .object_lock_mode(mode.clone())
                    .object_lock_retain_until_date(aws_smithy_types::DateTime::from(until));
            }
            Ok::<_, TierError>(req.send().await)
        })?;
        match r {
            Ok(_) => Ok(Put::Created),
            Err(e) => {
                let status = e.raw_response().map(|r| r.status().as_u16());
                match status {
                    Some(412) => Ok(Put::AlreadyExisted),
                    Some(501) if conditional => {
                        // The store does not implement conditional writes:
                        // fall back to HEAD-then-PUT (documented above).
                        self.no_conditional_put.store(true, Ordering::Relaxed);
                        self.put(key, body)
                    }
                    _ => Err(self.err("put", key, e)),
                }
            }
        }
    }
}

enum Body<'a> {
    Bytes(&'a [u8]),
    File(&'a Path),
}

impl Tier for S3Tier {
    fn name(&self) -> &str {
        &self.name
    }

    fn remove(&self, key: &str) -> Result<Removal, TierError> {
        self.rt.block_on(async {
            let mut retained = None;
            for (version, marker) in self.versions(key).await? {
                let r = self
                    .client
                    .delete_object()
                    .bucket(&self.settings.bucket)
                    .key(self.full(key))
                    .set_version_id(version.clone())
                    .send()
                    .await;
                if let Err(e) = r {
                    let status = e.raw_response().map(|r| r.status().as_u16());
                    if status == Some(403) && !marker {
                        retained = Some(self.retention_of(key, version.as_deref()).await?);
                        continue;
                    }
                    return Err(self.err("delete", key, e));
                }
            }
            Ok(match retained {
                Some(until) => Removal::Retained { until },
                None => Removal::Removed,
            })
        })
    }

    fn object_lock_days(&self) -> Option<u32> {
        self.lock.as_ref().map(|(_, d)| *d)
    }

    fn retained_until(&self, key: &str) -> Result<Option<String>, TierError> {
        self.rt.block_on(self.retention_of(key, None))
    }

    fn extend_retention(&self, key: &str, until: SystemTime) -> Result<(), TierError> {
        let Some((mode, _)) = &self.lock else {
            return Ok(());
        };
        let retention = aws_sdk_s3::types::ObjectLockRetention::builder()
            .mode(match mode {
                ObjectLockMode::Compliance => {
                    aws_sdk_s3::types::ObjectLockRetentionMode::Compliance
                }
                _ => aws_sdk_s3::types::ObjectLockRetentionMode::Governance,
            })
            .retain_until_date(aws_smithy_types::DateTime::from(until))
            .build();
        self.rt
            .block_on(
                self.client
                    .put_object_retention()
                    .bucket(&self.settings.bucket)
                    .key(self.full(key))
                    .retention(retention)
                    .send(),
            )
            .map(|_| ())
            .map_err(|e| self.err("extend retention", key, e))
    }

    fn put_bytes(&self, key: &str, data: &[u8]) -> Result<Put, TierError> {
        self.put(key, Body::Bytes(data))
    }

    fn put_file(&self, key: &str, path: &Path) -> Result<Put, TierError> {
        self.put(key, Body::File(path))
    }

    fn get(&self, key: &str) -> Result<Vec<u8>, TierError> {
        match self.clone_handle().fetch(key, None, 0, None) {
            Err(e) if e.is_not_found() && self.lock.is_some() && markers::looked_under(key) => {
                match self.rt.block_on(self.hidden_version(key))? {
                    Some((version, _)) => {
                        self.note_hidden(key);
                        self.clone_handle().fetch(key, Some(&version), 0, None)
                    }
                    None => Err(e),
                }
            }
            r => r,
        }
    }

    fn open(&self, key: &str) -> Result<Box<dyn ReadSeek>, TierError> {
        let (version, size) = match self.head_current(key)? {
            Some(size) => (None, size),
            None => match self.hidden(key)? {
                Some((version, size)) => (Some(version), size),
                None => {
                    return Err(TierError::NotFound {
                        tier: self.name.clone(),
                        key: key.to_string(),
                    })
                }
            },
        };
        Ok(Box::new(RangeReader::new(
            self.clone_handle(),
            key,
            version,
            size,
        )))
    }

    fn head(&self, key: &str) -> Result<Option<u64>, TierError> {
        match self.head_current(key)? {
            Some(size) => Ok(Some(size)),
            None => Ok(self.hidden(key)?.map(|(_, size)| size)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, TierError> {
        let full = self.full(prefix);
        self.rt.block_on(async {
            let mut out = Vec::new();
            let mut pages = self
                .client
                .list_objects_v2()
                .bucket(&self.settings.bucket)
                .prefix(&full)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| self.err("list", prefix, e))?;
                for o in page.contents() {
                    if let Some(k) = o.key().and_then(|k| k.strip_prefix(&self.settings.prefix)) {
                        out.push(ObjectInfo {
                            key: k.to_string(),
                            size: o.size().unwrap_or(0).max(0) as u64,
                        });
                    }
                }
            }
            if self.lock.is_some() {
                for o in self.hidden_under(prefix).await? {
                    self.note_hidden(&o.key);
                    out.push(o);
                }
            }
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
    }

    fn hidden_by_delete_markers(&self) -> Vec<String> {
        self.hidden_keys().iter().cloned().collect()
    }

    fn remove_delete_markers(&self, key: &str) -> Result<(), TierError> {
        self.rt.block_on(self.remove_markers(key))?;
        self.hidden_keys().remove(key);
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<(), TierError> {
        let r = self.rt.block_on(
            self.client
                .delete_object()
                .bucket(&self.settings.bucket)
                .key(self.full(key))
                .send(),
        );
        match r {
            Ok(_) => Ok(()),
            Err(e) => match self.err("delete", key, e) {
                TierError::NotFound { .. } => Ok(()),
                TierError::Remote { detail, .. }
                    if self.lock.is_some() && detail.contains("AccessDenied") =>
                {
                    Err(TierError::Remote {
                        tier: self.name.clone(),
                        op: "delete",
                        key: key.to_string(),
                        detail: "retained by S3 Object Lock (delete refused)".into(),
                    })
                }
                other => Err(other),
            },
        }
    }
}

impl S3Tier {
    /// The size of the current version of `key`, `None` when absent.
    fn head_current(&self, key: &str) -> Result<Option<u64>, TierError> {
        let r = self.rt.block_on(
            self.client
                .head_object()
                .bucket(&self.settings.bucket)
                .key(self.full(key))
                .send(),
        );
        match r {
            Ok(o) => Ok(Some(o.content_length().unwrap_or(0).max(0) as u64)),
            Err(e) => match self.err("head", key, e) {
                TierError::NotFound { .. } => Ok(None),
                other => Err(other),
            },
        }
    }

    /// On a tier with Object Lock, the version of an absent `key` that a
    /// delete marker hides, remembered for the report.
    fn hidden(&self, key: &str) -> Result<Option<(String, u64)>, TierError> {
        if self.lock.is_none() || !markers::looked_under(key) {
            return Ok(None);
        }
        let found = self.rt.block_on(self.hidden_version(key))?;
        if found.is_some() {
            self.note_hidden(key);
        }
        Ok(found)
    }

    fn clone_handle(&self) -> S3Handle {
        S3Handle {
            name: self.name.clone(),
            client: self.client.clone(),
            rt: self.rt.clone(),
            settings: self.settings.clone(),
        }
    }
}
