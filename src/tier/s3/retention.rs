//! Object versions and S3 Object Lock retention: what a delete has to
//! remove, and until when a locked version is kept.

use super::{S3Tier, TierError};

impl S3Tier {
    /// The versions (and delete markers) of one object: (version id, is a
    /// delete marker).
    pub(super) async fn versions(
        &self,
        key: &str,
    ) -> Result<Vec<(Option<String>, bool)>, TierError> {
        let full = self.full(key);
        let listed = self
            .client
            .list_object_versions()
            .bucket(&self.settings.bucket)
            .prefix(&full)
            .send()
            .await;
        let vs = match listed {
            Ok(vs) => vs,
            // A store without versioning (s3s-fs, Garage) keeps one
            // version: a plain delete removes it.
            Err(e) if e.raw_response().map(|r| r.status().as_u16()) == Some(501) => {
                return Ok(vec![(None, false)]);
            }
            Err(e) => return Err(self.err("list versions", key, e)),
        };
        let mut out: Vec<(Option<String>, bool)> = vs
            .versions()
            .iter()
            .filter(|v| v.key() == Some(full.as_str()))
            .map(|v| (v.version_id().map(str::to_string), false))
            .collect();
        out.extend(
            vs.delete_markers()
                .iter()
                .filter(|m| m.key() == Some(full.as_str()))
                .map(|m| (m.version_id().map(str::to_string), true)),
        );
        if out.is_empty() {
            // Listed as having no version (a store that lists versions of
            // versioned buckets only): the plain delete is harmless if the
            // object is indeed gone.
            out.push((None, false));
        }
        Ok(out)
    }

    pub(super) async fn retention_of(
        &self,
        key: &str,
        version: Option<&str>,
    ) -> Result<Option<String>, TierError> {
        let r = self
            .client
            .get_object_retention()
            .bucket(&self.settings.bucket)
            .key(self.full(key))
            .set_version_id(version.map(str::to_string))
            .send()
            .await;
        match r {
            Ok(o) => Ok(o
                .retention()
                .and_then(|r| r.retain_until_date())
                .and_then(|d| d.fmt(aws_smithy_types::date_time::Format::DateTime).ok())),
            Err(e) => match self.err("get retention", key, e) {
                TierError::NotFound { .. } => Ok(None),
                TierError::Remote { detail, .. }
                    if detail.contains("NoSuchObjectLockConfiguration")
                        || detail.contains("ObjectLockConfigurationNotFound") =>
                {
                    Ok(None)
                }
                other => Err(other),
            },
        }
    }
}
