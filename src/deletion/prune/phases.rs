//! Phase one (condemn) and phase two (delete) of the deletion protocol
//! (vault-format/SPEC.md "Deletion", prune steps 4 and 5).

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use vault_format::PackId;

use super::Run;
use crate::deletion::locks::{self, LockKind, LOCK_EXPIRY};
use crate::deletion::marks::{self, Mark, StoredMark};
use crate::deletion::pending;
use crate::deletion::refresh;
use crate::error::Result;
use crate::progress::Event;
use crate::tier::{keys, Tier};

impl Run<'_> {
    /// Step 5: condemn `packs` in every reachable tier that holds them and
    /// has no mark for them yet.
    pub(super) fn phase_one(&mut self, packs: &BTreeSet<PackId>) -> Result<()> {
        for (i, v) in self.views.iter().enumerate() {
            let already: HashSet<PackId> = self.marks[i]
                .iter()
                .flat_map(|m| m.mark.packs.iter().copied())
                .collect();
            let new: BTreeSet<PackId> = packs
                .iter()
                .filter(|p| v.packs.contains_key(p) && !already.contains(p))
                .copied()
                .collect();
            self.report.tiers[i].condemned = new.len() as u64;
            if new.is_empty() || self.opts.dry_run {
                continue;
            }
            let mark = Mark::new(new);
            let key = marks::write(&*v.tier, &mark)?;
            self.progress.event(&Event::Step(format!(
                "prune: condemned {} pack(s) in {}",
                mark.packs.len(),
                v.tier.name()
            )));
            self.marks[i].push(StoredMark { key, mark });
        }
        Ok(())
    }

    /// Step 4 (and, with a grace of 0, the end of step 5): delete what
    /// marks old enough still name and nothing needs. With `fresh`, only
    /// the marks this run wrote.
    pub(super) fn phase_two(&mut self, fresh: bool) -> Result<()> {
        let now = locks::unix_now();
        // Which marks may act, per tier.
        let mut eligible: Vec<Vec<usize>> = vec![Vec::new(); self.views.len()];
        for (i, v) in self.views.iter().enumerate() {
            let backups: Vec<locks::LockInfo> = locks::locks(&*v.tier)?
                .into_iter()
                .filter(|l| l.kind == LockKind::Backup && l.live(now))
                .collect();
            let range = if fresh {
                self.first_new[i]..self.marks[i].len()
            } else {
                0..self.first_new[i]
            };
            for k in range {
                let m = &self.marks[i][k];
                let created = m.mark.created_unix();
                let old_enough = now.saturating_sub(created) >= self.opts.grace.as_secs();
                if !old_enough {
                    self.report.tiers[i].marks_in_grace += 1;
                    continue;
                }
                // A backup that may have started before the mark (clocks
                // allowed to disagree by LOCK_EXPIRY) may still reference
                // its packs.
                if let Some(l) = backups
                    .iter()
                    .find(|l| l.created < created + LOCK_EXPIRY.as_secs())
                {
                    self.report.tiers[i].waiting_for.push(l.id.clone());
                    continue;
                }
                eligible[i].push(k);
            }
        }
        if eligible.iter().all(Vec::is_empty) {
            return Ok(());
        }
        // Backups that finished since the live set was made: their
        // manifests are in the tiers now (written before their locks went).
        if self.rescan()? {
            self.analyze()?;
        }
        let mut decided: Vec<(usize, Vec<PackId>)> = Vec::new();
        for (i, ks) in eligible.iter().enumerate() {
            // Per tier: a pack deleted from one tier may (and should) go
            // from the next too; within a tier, a copy's other home must
            // not be going in the same run.
            let mut deleting: HashSet<PackId> = HashSet::new();
            let mut del = Vec::new();
            for &k in ks {
                for p in self.marks[i][k].mark.packs.clone() {
                    if !self.views[i].packs.contains_key(&p)
                        || deleting.contains(&p)
                        || self.catalog.deletion_pending(&keys::pack(&p))?
                    {
                        continue;
                    }
                    if self.deletable(&p, i, &deleting)? {
                        deleting.insert(p);
                        del.push(p);
                    } else {
                        self.report.tiers[i].recovered += 1;
                    }
                }
            }
            decided.push((i, del));
        }
        self.delete(&decided)?;
        self.rewrite_marks(&eligible)?;
        Ok(())
    }

    /// Re-lists the tiers' manifests and walks any snapshot new since the
    /// live set was made (committed by another host, or by a backup on this
    /// one, whose catalog the backup shares). True when there was one.
    fn rescan(&mut self) -> Result<bool> {
        let tiers: Vec<Arc<dyn Tier>> = self.views.iter().map(|v| v.tier.clone()).collect();
        let (views, _) = refresh::list(&tiers);
        let identity = self.ctx.identity.clone();
        let learned = refresh::refresh(
            &mut self.catalog,
            &views,
            None,
            &self.vault.config,
            Some(&identity),
        )?;
        self.progress.event(&Event::Step(format!(
            "prune: refreshed ({})",
            learned.summary()
        )));
        for (v, nv) in self.views.iter_mut().zip(views) {
            v.snapshots = nv.snapshots;
        }
        Ok(self.walk_new_snapshots()? > 0)
    }

    /// May pack `p` go from tier `i`: does every maybe-live chunk in it
    /// have another home (a first location in a pack that stays in that
    /// tier)?
    fn deletable(&self, p: &PackId, i: usize, deleting: &HashSet<PackId>) -> Result<bool> {
        let Some(s) = self.stats.get(p) else {
            // Unknown to the catalog (not indexable): keep it.
            return Ok(false);
        };
        if s.needed {
            return Ok(false);
        }
        let condemned: HashSet<PackId> = self.marks[i]
            .iter()
            .flat_map(|m| m.mark.packs.iter().copied())
            .collect();
        for c in &s.copies {
            match self.catalog.chunk_pack(c)? {
                // A home whose own deletion is recorded (held back by
                // Object Lock, or not yet carried out) is no home.
                Some(q)
                    if q != *p
                        && self.views[i].packs.contains_key(&q)
                        && !condemned.contains(&q)
                        && !deleting.contains(&q)
                        && !self.catalog.deletion_pending(&keys::pack(&q))? => {}
                _ => return Ok(false),
            }
        }
        Ok(true)
    }

    /// Records the deletions, drops the packs from the catalog where no
    /// copy remains, then deletes.
    fn delete(&mut self, decided: &[(usize, Vec<PackId>)]) -> Result<()> {
        for (i, del) in decided {
            let t = &self.views[*i];
            self.report.tiers[*i].deleted = del.len() as u64;
            self.report.tiers[*i].bytes_freed = del.iter().filter_map(|p| t.packs.get(p)).sum();
        }
        if self.opts.dry_run {
            return Ok(());
        }
        let mut records = Vec::new();
        for (i, del) in decided {
            let name = self.views[*i].tier.name().to_string();
            records.extend(del.iter().map(|p| (keys::pack(p), name.clone())));
        }
        self.catalog.record_deletions(&records, "pruned")?;
        self.progress.event(&Event::Step(format!(
            "prune: {} deletion(s) recorded",
            records.len()
        )));
        let mut gone = Vec::new();
        for (i, del) in decided {
            for p in del {
                self.catalog
                    .remove_pack_copy(p, self.views[*i].tier.name())?;
                let left = self.views.iter().enumerate().any(|(j, v)| {
                    j != *i
                        && v.packs.contains_key(p)
                        && !decided.iter().any(|(k, d)| *k == j && d.contains(p))
                });
                if !left && !gone.contains(p) {
                    gone.push(*p);
                }
            }
        }
        self.catalog.remove_packs(&gone)?;
        let keys: HashSet<String> = records.into_iter().map(|(k, _)| k).collect();
        let tiers: Vec<Arc<dyn Tier>> = self.views.iter().map(|v| v.tier.clone()).collect();
        let done = pending::run(&self.catalog, &tiers, |k| keys.contains(k), self.progress)?;
        for (i, v) in self.views.iter_mut().enumerate() {
            if let Some(d) = done.iter().find(|d| d.tier == v.tier.name()) {
                let r = &mut self.report.tiers[i].deletions;
                r.deleted += d.deleted;
                r.retained.extend(d.retained.iter().cloned());
                r.failed.extend(d.failed.iter().cloned());
                // What is gone from the tier is gone from the view.
                for p in d.removed.iter().filter_map(|k| keys::parse_pack(k)) {
                    v.packs.remove(&p);
                }
            }
        }
        Ok(())
    }

    /// Rewrites the marks that acted: without the packs that are gone from
    /// their tier, keeping their creation time (a rewritten mark is as old
    /// as the one it replaces); an empty one is removed.
    fn rewrite_marks(&mut self, eligible: &[Vec<usize>]) -> Result<()> {
        if self.opts.dry_run {
            return Ok(());
        }
        for (i, ks) in eligible.iter().enumerate() {
            let t = self.views[i].tier.clone();
            for &k in ks {
                let m = &self.marks[i][k];
                let remaining: BTreeSet<PackId> = m
                    .mark
                    .packs
                    .iter()
                    .filter(|p| {
                        // A pack whose deletion is recorded stays marked
                        // until it is gone: backups must keep off it.
                        self.views[i].packs.contains_key(p)
                            && (!self.stats.get(p).is_some_and(|s| s.needed)
                                || self
                                    .catalog
                                    .deletion_pending(&keys::pack(p))
                                    .unwrap_or(true))
                    })
                    .copied()
                    .collect();
                if remaining == m.mark.packs {
                    continue;
                }
                let old = m.key.clone();
                if !remaining.is_empty() {
                    let mark = Mark {
                        packs: remaining,
                        ..m.mark.clone()
                    };
                    let key = marks::write(&*t, &mark)?;
                    self.marks[i][k] = StoredMark { key, mark };
                }
                t.remove(&old)?;
                self.progress.event(&Event::Step(format!(
                    "prune: mark rewritten in {}",
                    t.name()
                )));
            }
            self.marks[i].retain(|m| !m.mark.packs.is_empty());
        }
        Ok(())
    }
}
