//! Delete markers over locked versions.
//!
//! With S3 Object Lock, a plain `DeleteObject` (a stolen credential, an
//! operator's slip, a lifecycle rule) cannot remove a locked version: it
//! adds a delete marker on top, and the object looks gone to every plain
//! read and listing while its data is still there. Object Lock would then
//! protect only against the attacker who knows to delete versions. So on a
//! tier with Object Lock, coffer looks under a marker: listings include
//! objects whose current version is a delete marker over a kept version,
//! reads fall back to that version, and every such object is remembered
//! (reported by verify, restore and sync; sync removes the markers).

use aws_sdk_s3::types::ObjectVersion;

use super::{ObjectInfo, S3Tier, TierError};
use crate::tier::keys;

/// Whether coffer looks under a delete marker for `key`: the vault's data
/// only (packs, manifests, its config), which Object Lock retains. Pins,
/// locks, condemned marks and WAL coordination objects are deleted on
/// purpose (`unpin` is a plain delete), so a marker over them is meant.
pub(super) fn looked_under(key: &str) -> bool {
    key.starts_with(keys::PACKS) || key.starts_with(keys::SNAPSHOTS) || key == keys::CONFIG
}

impl S3Tier {
    /// The newest kept (not delete-marker) version of `key`, when its
    /// current version is a delete marker: (version id, size).
    pub(super) async fn hidden_version(
        &self,
        key: &str,
    ) -> Result<Option<(String, u64)>, TierError> {
        let full = self.full(key);
        let found = self.hidden_under_full(&full).await?;
        Ok(found
            .into_iter()
            .find(|(k, _, _)| *k == full)
            .map(|(_, v, size)| (v, size)))
    }

    /// Objects under `prefix` whose current version is a delete marker over
    /// a kept version (keys without the tier's prefix, with that version's
    /// size).
    pub(super) async fn hidden_under(&self, prefix: &str) -> Result<Vec<ObjectInfo>, TierError> {
        if !(looked_under(prefix) || keys::PACKS.starts_with(prefix)) {
            return Ok(Vec::new());
        }
        let full = self.full(prefix);
        Ok(self
            .hidden_under_full(&full)
            .await?
            .into_iter()
            .filter_map(|(k, _, size)| {
                k.strip_prefix(&self.settings.prefix).map(|k| ObjectInfo {
                    key: k.to_string(),
                    size,
                })
            })
            .filter(|o| looked_under(&o.key))
            .collect())
    }

    /// (full key, kept version id, size) of every hidden object under `full`.
    async fn hidden_under_full(&self, full: &str) -> Result<Vec<(String, String, u64)>, TierError> {
        let mut marked = std::collections::HashSet::new();
        let mut kept: Vec<ObjectVersion> = Vec::new();
        let (mut key_marker, mut version_marker) = (None, None);
        loop {
            let page = self
                .client
                .list_object_versions()
                .bucket(&self.settings.bucket)
                .prefix(full)
                .set_key_marker(key_marker.take())
                .set_version_id_marker(version_marker.take())
                .send()
                .await
                .map_err(|e| self.err("list versions", full, e))?;
            for m in page.delete_markers() {
                if m.is_latest() == Some(true) {
                    marked.insert(m.key().unwrap_or_default().to_string());
                }
            }
            kept.extend(page.versions().iter().cloned());
            if page.is_truncated() != Some(true) {
                break;
            }
            key_marker = page.next_key_marker().map(str::to_string);
            version_marker = page.next_version_id_marker().map(str::to_string);
            if key_marker.is_none() {
                break;
            }
        }
        // Versions come newest first per key: the first kept one of a
        // marked key is what the marker hides.
        let mut out: Vec<(String, String, u64)> = Vec::new();
        for v in kept {
            let (Some(k), Some(id)) = (v.key(), v.version_id()) else {
                continue;
            };
            if marked.contains(k) && !out.iter().any(|(o, _, _)| o == k) {
                out.push((
                    k.to_string(),
                    id.to_string(),
                    v.size().unwrap_or(0).max(0) as u64,
                ));
            }
        }
        Ok(out)
    }

    /// Remembers that `key` was found under a delete marker.
    pub(super) fn note_hidden(&self, key: &str) {
        self.hidden_keys().insert(key.to_string());
    }

    /// The keys found under a delete marker. A set of names stays whole
    /// whatever panicked while it was held, so a poisoned lock is used.
    pub(super) fn hidden_keys(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::BTreeSet<String>> {
        self.hidden
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Removes the delete markers above the kept version of `key`, so that
    /// it is current again (sync's repair).
    pub(super) async fn remove_markers(&self, key: &str) -> Result<(), TierError> {
        for (version, marker) in self.versions(key).await? {
            if !marker {
                continue;
            }
            self.client
                .delete_object()
                .bucket(&self.settings.bucket)
                .key(self.full(key))
                .set_version_id(version)
                .send()
                .await
                .map_err(|e| self.err("remove delete marker", key, e))?;
        }
        Ok(())
    }
}
