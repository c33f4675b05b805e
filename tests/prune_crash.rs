//! Crash consistency of deletion: `coffer forget` and `coffer prune` are
//! killed with SIGKILL at each step of the protocol (vault-format/SPEC.md
//! "Deletion": the catalog records, the manifest and pack deletes, the
//! live set, repack's new packs, the condemned mark, the recorded
//! deletions), and a backup is killed to leave orphan packs. After every
//! kill each kept snapshot restores byte for byte and `verify --read-data`
//! is clean; running forget and prune again finishes the work: the
//! forgotten snapshots are gone, no mark is left, a further prune finds
//! nothing to do, and the tier holds no more than a prune that was never
//! killed leaves.
//!
//! The kill is triggered by the `-v` step log read from the child's
//! stderr (`coffer: <step>` lines), so there are no sleeps: the kill lands
//! right after the logged step, before or during the next one.

#[path = "support/cli.rs"]
mod cli_support;

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus};
use std::sync::OnceLock;

use cli_support::*;
use serde_json::{json, Value};

const MIB: usize = 1 << 20;
const SIGKILL: i32 = 9;
/// How old a lock's newest heartbeat may be for it to be live (seconds;
/// `LOCK_EXPIRY` in src/deletion/locks.rs).
const LOCK_EXPIRY: u64 = 600;
/// How much older a dead holder's lock heartbeats are made: well past
/// [`LOCK_EXPIRY`], as if the dead process had been gone an hour.
const AGE_LOCKS_BY: u64 = 3600;
/// Prune as a vault only this host writes runs it: condemn, repack and
/// delete in one run, with no bound on what it rewrites.
const PRUNE: &[&str] = &[
    "prune",
    "--grace",
    "0",
    "--max-unused",
    "0",
    "--max-repack",
    "100",
];

/// What a killed run logged, and how it ended.
struct Killed {
    status: ExitStatus,
    log: Vec<String>,
}

impl Killed {
    fn by_signal(&self) -> bool {
        self.status.signal() == Some(SIGKILL)
    }
}

/// Runs `cmd` (a `coffer -v …` command) and SIGKILLs it as soon as the
/// `nth` stderr line containing `step` appears. Panics if the run ends
/// before that line (the scenario does not reach the point) or logs an
/// error before it.
fn killed_at(cmd: Command, step: &str, nth: usize) -> Killed {
    let (status, log) = killed_at_line(cmd, |l| l.contains(step), nth, step);
    assert!(
        !log.iter().any(|l| l.contains("error")),
        "the run failed before it was killed:\n{}",
        log.join("\n")
    );
    Killed { status, log }
}

/// The data each scenario backs up, one entry a night, all of one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    /// Six small nights; `forget --keep-last 2` forgets four. Night 1's
    /// pack holds `base` (still used by nights 5 and 6) and night 2's holds
    /// `shared` (still used by night 5): both are sparse and repacked into
    /// one new pack. Nights 3 and 4 hold only their own data: their packs
    /// are dead. So prune deletes four packs, and forget four manifests.
    SixNights,
    /// Two nights; `forget --keep-last 1` forgets the first. Night 1 is
    /// 36 MiB in two packs; night 2 keeps 33 MiB of it, spread over both,
    /// so both are repacked, into two new packs (32 MiB is the pack size):
    /// a kill can land between them.
    LargeRepack,
}

impl Scenario {
    fn nights(self) -> Vec<Vec<u8>> {
        match self {
            Scenario::SixNights => {
                let base = random_bytes(1, MIB);
                let shared = random_bytes(2, MIB);
                let own = |k: u64| random_bytes(10 + k, MIB / 2);
                vec![
                    [&base[..], &own(1)].concat(),
                    [&own(2)[..], &shared].concat(),
                    own(3),
                    own(4),
                    [&base[..], &shared, &own(5)].concat(),
                    [&base[..], &own(6)].concat(),
                ]
            }
            Scenario::LargeRepack => {
                let a = random_bytes(20, 36 * MIB);
                let b = [
                    &a[..30 * MIB],
                    &a[32 * MIB..35 * MIB],
                    &random_bytes(21, MIB)[..],
                ]
                .concat();
                vec![a, b]
            }
        }
    }

    /// `forget` as the scenario runs it: it keeps the newest nights.
    fn forget_args(self) -> [&'static str; 3] {
        match self {
            Scenario::SixNights => ["forget", "--keep-last", "2"],
            Scenario::LargeRepack => ["forget", "--keep-last", "1"],
        }
    }

    /// How many of the newest nights `forget` keeps.
    fn keep_last(self) -> usize {
        self.forget_args()[2].parse().unwrap()
    }

    /// Pack count and bytes a prune that is never killed leaves (computed
    /// once per scenario).
    fn reference(self) -> (usize, u64) {
        static SIX: OnceLock<(usize, u64)> = OnceLock::new();
        static LARGE: OnceLock<(usize, u64)> = OnceLock::new();
        let cell = match self {
            Scenario::SixNights => &SIX,
            Scenario::LargeRepack => &LARGE,
        };
        *cell.get_or_init(|| {
            let n = Nights::back_up(self);
            n.forget();
            let rep = n.prune();
            assert!(
                !rep["repacked"]["packs"].as_array().unwrap().is_empty(),
                "the scenario must repack: {rep}"
            );
            n.footprint()
        })
    }
}

/// A vault after a scenario's nights were backed up.
struct Nights {
    scenario: Scenario,
    v: Vault,
    /// Every snapshot, oldest first, with its data.
    all: Vec<(String, Vec<u8>)>,
}

impl Nights {
    fn back_up(scenario: Scenario) -> Nights {
        let v = Vault::new();
        let all = scenario
            .nights()
            .into_iter()
            .map(|data| {
                let p = v.fresh_path("night");
                std::fs::write(&p, &data).unwrap();
                (v.backup(&p, &["--job", "db"]), data)
            })
            .collect();
        Nights { scenario, v, all }
    }

    fn kept(&self) -> &[(String, Vec<u8>)] {
        &self.all[self.all.len() - self.scenario.keep_last()..]
    }

    fn kept_ids(&self) -> BTreeSet<String> {
        self.kept().iter().map(|(id, _)| id.clone()).collect()
    }

    /// `coffer forget --keep-last N`, to completion.
    fn forget(&self) {
        self.v.ok(&self.scenario.forget_args());
    }

    /// `coffer --json prune --grace 0 --max-unused 0 --max-repack 100`, to completion.
    fn prune(&self) -> Value {
        let o = self.v.ok(&[&["--json"], PRUNE].concat());
        serde_json::from_slice(&o.stdout).unwrap()
    }

    /// `coffer -v ARGS…`, killed at the `nth` line containing `step`.
    fn killed_at(&self, args: &[&str], step: &str, nth: usize) -> Killed {
        let mut cmd = self.v.cmd();
        cmd.arg("-v").args(args);
        killed_at(cmd, step, nth)
    }

    /// Packs in the local tier and their bytes.
    fn footprint(&self) -> (usize, u64) {
        let packs = self.v.pack_files();
        let bytes = packs
            .iter()
            .map(|p| std::fs::metadata(p).unwrap().len())
            .sum();
        (packs.len(), bytes)
    }

    /// Every listed snapshot is a kept one, and restores byte for byte;
    /// `verify --read-data` finds nothing wrong.
    fn assert_kept_intact(&self, what: &str) {
        let listed = self.v.snapshot_ids();
        let all: BTreeSet<String> = self.all.iter().map(|(id, _)| id.clone()).collect();
        assert!(listed.is_subset(&all), "{listed:?}; {what}");
        assert!(listed.is_superset(&self.kept_ids()), "{listed:?}; {what}");
        for (id, data) in self.all.iter().filter(|(id, _)| listed.contains(id)) {
            self.v.assert_restores(id, data);
        }
        assert_verify_clean(&self.v, what);
    }

    /// After forget and prune ran to completion: only the kept snapshots
    /// are listed and in the tier, each restores, verify is clean, no mark
    /// names a pack still in the tier, another prune finds nothing to do
    /// (and drops what marks are left), and the tier holds no more than a
    /// prune never killed leaves.
    fn assert_finished(&self, what: &str) {
        let kept = self.kept_ids();
        assert_eq!(self.v.snapshot_ids(), kept, "{what}");
        assert_eq!(self.v.manifest_ids(), kept, "{what}");
        self.assert_kept_intact(what);
        for (mark, packs) in marks(&self.v) {
            for p in packs {
                assert!(
                    !self.v.pack_path(&p).exists(),
                    "mark {mark} still condemns pack {p}; {what}"
                );
            }
        }
        let rep = self.prune();
        let t = &rep["tiers"][0];
        assert_eq!(t["condemned"], 0, "{rep}; {what}");
        assert_eq!(t["deleted"], 0, "{rep}; {what}");
        assert_eq!(t["deletions"]["deleted"], 0, "{rep}; {what}");
        assert_eq!(rep["repacked"]["packs"], json!([]), "{rep}; {what}");
        assert_eq!(marks(&self.v), vec![], "{what}");
        let (packs, bytes) = self.footprint();
        let (ref_packs, ref_bytes) = self.scenario.reference();
        assert!(
            packs <= ref_packs && bytes <= ref_bytes + ref_bytes / 100,
            "{packs} packs of {bytes} bytes left where a prune never killed leaves {ref_packs} of {ref_bytes}; {what}"
        );
    }
}

/// `coffer --json verify --read-data` reports no problems.
fn assert_verify_clean(v: &Vault, what: &str) {
    let o = v.run(&["--json", "verify", "--read-data"]);
    let rep: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {} {}; {what}", stdout(&o), stderr(&o)));
    assert_eq!(rep["problems"], json!([]), "{rep}; {what}");
    assert!(o.status.success(), "{}; {what}", stderr(&o));
}

/// The condemned marks in the local tier: key and packs of each.
fn marks(v: &Vault) -> Vec<(String, Vec<String>)> {
    let dir = v.vault.join("condemned");
    if !dir.exists() {
        return vec![];
    }
    all_files(&dir)
        .iter()
        .map(|p| {
            let m: Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
            let packs = m["packs"].as_array().unwrap().iter();
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                packs.map(|p| p.as_str().unwrap().to_string()).collect(),
            )
        })
        .collect()
}

/// Makes every live heartbeat of a `kind` lock in the local tier
/// (`locks/<kind>-<id>-<created>-<time>`, `time` within `LOCK_EXPIRY` of
/// now) [`AGE_LOCKS_BY`] seconds older: what the clock does to the lock of
/// a process that died. Returns how many there were.
fn age_locks(v: &Vault, kind: &str) -> usize {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut n = 0;
    for p in all_files(&v.vault.join("locks")) {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(&format!("{kind}-")) else {
            continue;
        };
        let parts: Vec<&str> = rest.split('-').collect();
        let [id, created, time] = parts[..] else {
            panic!("unexpected lock heartbeat {name}");
        };
        let [created, time] = [created, time].map(|t| t.parse::<u64>().unwrap());
        if time + LOCK_EXPIRY < now {
            continue;
        }
        let to = format!(
            "{kind}-{id}-{}-{}",
            created - AGE_LOCKS_BY,
            time - AGE_LOCKS_BY
        );
        std::fs::rename(&p, p.with_file_name(to)).unwrap();
        n += 1;
    }
    n
}

/// Is there a `kind` lock heartbeat in the local tier?
fn lock_held(v: &Vault, kind: &str) -> bool {
    let dir = v.vault.join("locks");
    dir.exists()
        && all_files(&dir).iter().any(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("{kind}-"))
        })
}

/// Which command a kill point is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmd {
    /// `forget --keep-last N`.
    Forget,
    /// `prune --grace 0 --max-unused 0 --max-repack 100`.
    Prune,
}

/// A kill point: the command, and the `nth` stderr line containing `step`.
type Point = (Cmd, &'static str, usize);

/// How the work the killed runs left is finished.
#[derive(Debug, Clone, Copy)]
enum Finish {
    /// `forget` again, then prune.
    ForgetThenPrune,
    /// Prune alone (it also carries out the deletions forget recorded).
    Prune,
    /// `sync` (it carries out recorded deletions too), then prune.
    SyncThenPrune,
}

/// Backs up the scenario's nights and kills each of `kills` in turn (a
/// prune kill forgets to completion first, unless a forget was killed
/// before it). After every kill: the forgotten snapshots are no longer
/// listed, every kept one restores, verify is clean and, after a prune,
/// its lock keeps another prune off until it is stale. Then finishes the
/// work per `finish` and checks [`Nights::assert_finished`].
fn survives(s: Scenario, kills: &[Point], finish: Finish) {
    let n = Nights::back_up(s);
    if kills[0].0 == Cmd::Prune {
        n.forget();
    }
    let mut what = format!("{s:?}");
    for &(cmd, step, nth) in kills {
        let args = match cmd {
            Cmd::Forget => &s.forget_args()[..],
            Cmd::Prune => PRUNE,
        };
        let killed = n.killed_at(args, step, nth);
        what = format!(
            "{what}; {cmd:?} killed after {nth}. `{step}`, log:\n{}\n",
            killed.log.join("\n")
        );
        // Either the kill landed, or the run had just ended on its own.
        assert!(
            killed.by_signal() || killed.status.success(),
            "{:?}; {what}",
            killed.status
        );
        // Every kill point comes after forget's catalog commit.
        assert_eq!(n.v.snapshot_ids(), n.kept_ids(), "{what}");
        n.assert_kept_intact(&what);
        // The kill can land after the run's last logged step, once it has
        // released its lock (the last thing it does): then it had finished.
        let released = !lock_held(&n.v, "prune");
        if cmd == Cmd::Prune && killed.by_signal() && !released {
            // The dead prune holds the lock, as far as anyone can tell...
            let o = n.v.fails(PRUNE, 1);
            assert!(
                stderr(&o).contains("another prune holds the lock"),
                "{}; {what}",
                stderr(&o)
            );
            // ...until its heartbeat is older than LOCK_EXPIRY.
            assert_eq!(age_locks(&n.v, "prune"), 1, "{what}");
        }
    }
    what = format!("{what}; finished by {finish:?}");
    match finish {
        Finish::ForgetThenPrune => n.forget(),
        Finish::SyncThenPrune => {
            n.v.ok(&["sync"]);
        }
        Finish::Prune => {}
    }
    if let Finish::ForgetThenPrune | Finish::SyncThenPrune = finish {
        assert_eq!(n.v.manifest_ids(), n.kept_ids(), "{what}");
    }
    n.prune();
    n.assert_finished(&what);
}

#[test]
fn forget_killed_at_any_step_loses_nothing_kept_and_forget_or_prune_finishes_it() {
    use Finish::*;
    for (step, nth, finish) in [
        ("forget: ", 1, ForgetThenPrune),
        ("forget: ", 1, Prune),
        ("deleted snapshots/", 1, ForgetThenPrune),
        ("deleted snapshots/", 1, SyncThenPrune),
        ("deleted snapshots/", 2, Prune),
        ("deleted snapshots/", 3, ForgetThenPrune),
        ("deleted snapshots/", 4, Prune),
    ] {
        survives(Scenario::SixNights, &[(Cmd::Forget, step, nth)], finish);
    }
    // A prune killed too, after it carried out the deletes forget left.
    survives(
        Scenario::SixNights,
        &[
            (Cmd::Forget, "forget: ", 1),
            (Cmd::Prune, "prune: live set", 1),
        ],
        Prune,
    );
}

#[test]
fn prune_killed_at_any_step_around_its_deletes_loses_nothing_kept_and_the_next_prune_finishes() {
    use Finish::*;
    for (step, nth, finish) in [
        ("prune: lock taken", 1, Prune),
        ("prune: refreshed", 1, Prune),
        ("prune: live set", 1, Prune),
        ("prune: condemned", 1, Prune),
        // The rescan of the tiers right before deleting.
        ("prune: refreshed", 2, Prune),
        ("deletion(s) recorded", 1, Prune),
        ("deleted packs/", 1, Prune),
        ("deleted packs/", 2, SyncThenPrune),
        ("deleted packs/", 3, Prune),
        ("deleted packs/", 4, Prune),
        ("prune: mark rewritten", 1, Prune),
    ] {
        survives(Scenario::SixNights, &[(Cmd::Prune, step, nth)], finish);
    }
    // The prune that takes over a killed one's lock, mark and recorded
    // deletions, killed too.
    survives(
        Scenario::SixNights,
        &[
            (Cmd::Prune, "deleted packs/", 2),
            (Cmd::Prune, "prune: live set", 1),
        ],
        Prune,
    );
}

#[test]
fn prune_killed_in_repack_before_a_new_pack_completes_it_loses_nothing_kept() {
    for (s, step, nth) in [
        (Scenario::SixNights, "prune: repacked pack", 1),
        (Scenario::LargeRepack, "prune: repacked pack", 1),
        // The first new pack is stored and its chunks point at it; the
        // second is still being filled.
        (Scenario::LargeRepack, "coffer: pack stored", 1),
    ] {
        survives(s, &[(Cmd::Prune, step, nth)], Finish::Prune);
    }
}

#[test]
fn prune_killed_after_repack_stored_a_new_pack_leaves_no_pack_behind() {
    for (s, step, nth) in [
        (Scenario::SixNights, "coffer: pack stored", 1),
        (Scenario::LargeRepack, "coffer: pack stored", 2),
        (Scenario::SixNights, "prune: repacked pack", 2),
        (Scenario::SixNights, "coffer: pack sealed", 1),
        (Scenario::LargeRepack, "coffer: pack sealed", 1),
        (Scenario::LargeRepack, "prune: repacked pack", 2),
        (Scenario::LargeRepack, "coffer: pack sealed", 2),
    ] {
        survives(s, &[(Cmd::Prune, step, nth)], Finish::Prune);
    }
}

#[test]
fn prune_finishing_a_killed_prunes_deletions_drops_them_from_the_mark() {
    let n = Nights::back_up(Scenario::SixNights);
    n.forget();
    // Killed after the first of its four deletes.
    let killed = n.killed_at(PRUNE, "deleted packs/", 1);
    assert!(killed.by_signal(), "{:?}", killed.log);
    assert_eq!(age_locks(&n.v, "prune"), 1);
    let rep = n.prune();
    let t = &rep["tiers"][0];
    assert!(
        t["deletions"]["deleted"].as_u64().unwrap() > 0,
        "the killed prune carried out its deletions before it died: {rep}"
    );
    assert_eq!(t["recovered"], 0, "{rep}");
    assert_eq!(marks(&n.v), vec![], "{rep}");
}

#[test]
fn packs_deleted_for_a_killed_prune_by_another_run_leave_the_catalog() {
    // Killed between recording its deletions and dropping the packs from
    // the catalog; sync carries the deletions out.
    survives(
        Scenario::SixNights,
        &[(Cmd::Prune, "deletion(s) recorded", 1)],
        Finish::SyncThenPrune,
    );
    // The same, carried out by a prune that is killed in turn.
    survives(
        Scenario::SixNights,
        &[
            (Cmd::Prune, "deletion(s) recorded", 1),
            (Cmd::Prune, "prune: live set", 1),
        ],
        Finish::Prune,
    );
}

#[test]
fn orphan_packs_of_a_killed_backup_are_reclaimed_by_prune_and_nothing_else() {
    let n = Nights::back_up(Scenario::SixNights);
    let before: BTreeSet<_> = n.v.pack_files().into_iter().collect();
    let big = n.v.work.join("big.bin");
    write_random_file(&big, 30, 70 * MIB);
    let killed = n.killed_at(
        &["backup", "--job", "big", big.to_str().unwrap()],
        "coffer: pack stored ",
        1,
    );
    let what = format!("backup killed, log:\n{}", killed.log.join("\n"));
    assert!(killed.by_signal(), "{what}");
    let after: BTreeSet<_> = n.v.pack_files().into_iter().collect();
    let orphans = after.difference(&before).count();
    assert!(orphans > 0 && before.is_subset(&after), "{what}");
    // Nothing was forgotten: every night is kept.
    assert_eq!(n.v.snapshot_ids().len(), n.all.len(), "{what}");

    // The dead backup's lock is as fresh as a running backup's: prune
    // condemns the orphans but deletes nothing while it is live.
    let prune = ["--json", "prune", "--grace", "0"];
    let rep: Value = serde_json::from_slice(&n.v.ok(&prune).stdout).unwrap();
    let t = &rep["tiers"][0];
    assert_eq!(t["condemned"], orphans, "{rep}; {what}");
    assert_eq!(t["deleted"], 0, "{rep}; {what}");
    assert_eq!(t["waiting_for"].as_array().unwrap().len(), 1, "{rep}");
    assert_eq!(n.v.pack_files().len(), after.len(), "{what}");

    // Once the lock is stale, prune deletes the orphans, and only them.
    assert_eq!(age_locks(&n.v, "backup"), 1, "{what}");
    let rep: Value = serde_json::from_slice(&n.v.ok(&prune).stdout).unwrap();
    assert_eq!(rep["tiers"][0]["deleted"], orphans, "{rep}; {what}");
    let left: BTreeSet<_> = n.v.pack_files().into_iter().collect();
    assert_eq!(left, before, "{what}");
    for (id, data) in &n.all {
        n.v.assert_restores(id, data);
    }
    assert_verify_clean(&n.v, &what);
    assert_eq!(marks(&n.v), vec![], "{what}");
}
