//! Retention on calendars: month ends, DST, a year of daily snapshots,
//! pins, companions and explicit ids.

use super::*;

fn tz(name: &str) -> TimeZone {
    TimeZone::get(name).expect("tzdata is installed")
}

fn id(n: u32) -> SnapshotId {
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&n.to_be_bytes());
    SnapshotId(b)
}

/// A snapshot of job `job` at civil time `at` in `zone`.
fn snap(n: u32, job: &str, at: &str, zone: &str) -> Candidate {
    let z = at
        .parse::<jiff::civil::DateTime>()
        .unwrap()
        .to_zoned(tz(zone))
        .unwrap();
    Candidate {
        id: id(n),
        job: job.into(),
        host: "db1".into(),
        created: z.timestamp().to_string(),
        tags: vec![],
        pin: None,
        dump: None,
    }
}

fn policy(f: impl FnOnce(&mut Policy)) -> Policy {
    let mut p = Policy::default();
    f(&mut p);
    p
}

/// The kept snapshots' numbers, by job, and their reasons.
fn run(cands: &[Candidate], p: &Policy, zone: &str) -> Vec<(u32, Vec<Keep>)> {
    let f = |_: &str| Some(p.clone());
    let plan = plan(cands, &Selection::Policies(&f), &tz(zone)).unwrap();
    let mut kept: Vec<(u32, Vec<Keep>)> = plan
        .iter()
        .flat_map(|g| g.snapshots.iter())
        .filter(|v| v.keep)
        .map(|v| {
            (
                u32::from_be_bytes(v.id.0[..4].try_into().unwrap()),
                v.reasons.clone(),
            )
        })
        .collect();
    kept.sort_by_key(|k| k.0);
    kept
}

fn numbers(kept: &[(u32, Vec<Keep>)]) -> Vec<u32> {
    kept.iter().map(|k| k.0).collect()
}

/// Two snapshots a day (03:00 and 15:00) for 365 days from 2025-01-01.
fn a_year(zone: &str) -> Vec<Candidate> {
    let start: jiff::civil::Date = "2025-01-01".parse().unwrap();
    (0..365)
        .flat_map(|d| {
            let day = start.checked_add(jiff::Span::new().days(d)).unwrap();
            [(3, 2 * d as u32), (15, 2 * d as u32 + 1)]
                .map(|(h, n)| snap(n, "nightly", &format!("{day}T{h:02}:00:00"), zone))
        })
        .collect()
}

#[test]
fn keep_last_keeps_the_newest_n() {
    let cands: Vec<_> = (0..5)
        .map(|n| snap(n, "j", &format!("2026-03-0{}T10:00:00", n + 1), "UTC"))
        .collect();
    let kept = run(&cands, &policy(|p| p.keep_last = Some(3)), "UTC");
    assert_eq!(numbers(&kept), vec![2, 3, 4]);
}

#[test]
fn a_year_of_twice_daily_snapshots_keeps_the_newest_of_each_bucket() {
    let cands = a_year("UTC");
    let p = policy(|p| {
        p.keep_daily = Some(7);
        p.keep_weekly = Some(4);
        p.keep_monthly = Some(12);
        p.keep_yearly = Some(3);
    });
    let kept = run(&cands, &p, "UTC");
    // Daily: the 15:00 snapshot of each of the last 7 days (Dec 25-31).
    let daily: Vec<u32> = kept
        .iter()
        .filter(|k| k.1.contains(&Keep::Rule(Reason::Daily)))
        .map(|k| k.0)
        .collect();
    assert_eq!(daily, (358..365).map(|d| 2 * d + 1).collect::<Vec<_>>());
    // Monthly: the last snapshot of each month (the 15:00 of its last day).
    let monthly: Vec<u32> = kept
        .iter()
        .filter(|k| k.1.contains(&Keep::Rule(Reason::Monthly)))
        .map(|k| k.0)
        .collect();
    let month_ends = [31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334, 365];
    assert_eq!(
        monthly,
        month_ends
            .iter()
            .map(|d| 2 * (d - 1) + 1)
            .collect::<Vec<_>>()
    );
    // Weekly: ISO weeks end on Sunday; 2025-12-28 is a Sunday and the week of
    // Dec 29 (ISO week 1 of 2026) is unfinished: its newest is Dec 31.
    let weekly: Vec<u32> = kept
        .iter()
        .filter(|k| k.1.contains(&Keep::Rule(Reason::Weekly)))
        .map(|k| k.0)
        .collect();
    assert_eq!(
        weekly,
        vec![2 * 347 + 1, 2 * 354 + 1, 2 * 361 + 1, 2 * 364 + 1]
    );
    // Yearly: only 2025 exists, so one.
    assert_eq!(
        kept.iter()
            .filter(|k| k.1.contains(&Keep::Rule(Reason::Yearly)))
            .count(),
        1
    );
    // 7 daily + 12 monthly + 4 weekly, overlapping: Dec 31 is all of them,
    // Dec 28 both weekly and daily.
    assert_eq!(kept.len(), 7 + 11 + 2);
}

#[test]
fn month_ends_follow_the_time_zone() {
    // 23:30 on Jan 31 in New York is already Feb 1 in UTC.
    let cands = vec![
        snap(1, "j", "2026-01-31T23:30:00", "America/New_York"),
        snap(2, "j", "2026-02-01T06:00:00", "America/New_York"),
    ];
    let p = policy(|p| p.keep_monthly = Some(2));
    assert_eq!(numbers(&run(&cands, &p, "America/New_York")), vec![1, 2]);
    // Bucketed in UTC both are February: only the newest is kept.
    assert_eq!(numbers(&run(&cands, &p, "UTC")), vec![2]);
}

#[test]
fn dst_days_are_one_day_and_the_repeated_hour_is_two_hours() {
    // 2026-11-01: New York falls back from 02:00 EDT to 01:00 EST, so that
    // day has 25 hours. One snapshot every hour, by the clock on the wall.
    let zone = "America/New_York";
    let start: Timestamp = "2026-10-31T12:00:00-04:00".parse().unwrap();
    let cands: Vec<Candidate> = (0..48u32)
        .map(|h| {
            let t = start
                .checked_add(jiff::SignedDuration::from_hours(h as i64))
                .unwrap();
            Candidate {
                id: id(h),
                job: "j".into(),
                host: "db1".into(),
                created: t.to_string(),
                tags: vec![],
                pin: None,
                dump: None,
            }
        })
        .collect();
    // 48 real hours are 48 hourly buckets, although 01:xx shows twice.
    let hourly = run(&cands, &policy(|p| p.keep_hourly = Some(100)), zone);
    assert_eq!(hourly.len(), 48);
    // Oct 31 (12 h), Nov 1 (25 h), Nov 2 (11 h): three days.
    let daily = run(&cands, &policy(|p| p.keep_daily = Some(100)), zone);
    assert_eq!(daily.len(), 3);
    // The newest of Nov 1 is 23:00 EST = hour 12 + 25 - 1 = 36.
    assert!(numbers(&daily).contains(&36));
}

#[test]
fn keep_within_is_relative_to_the_newest_snapshot() {
    let cands = vec![
        snap(1, "j", "2026-01-01T00:00:00", "UTC"), // 59 days before the newest
        snap(2, "j", "2026-01-30T00:00:00", "UTC"), // 30 days 1 hour before
        snap(3, "j", "2026-01-30T02:00:00", "UTC"), // 29 days 23 hours before
        snap(4, "j", "2026-03-01T01:00:00", "UTC"),
    ];
    let p = policy(|p| p.keep_within = Some(policy::parse_duration("30d").unwrap()));
    assert_eq!(numbers(&run(&cands, &p, "UTC")), vec![3, 4]);
}

#[test]
fn tags_pins_and_the_newest_are_kept() {
    let mut cands: Vec<_> = (0..6)
        .map(|n| snap(n, "j", &format!("2026-03-0{}T10:00:00", n + 1), "UTC"))
        .collect();
    cands[1].tags = vec!["release".into()];
    cands[2].pin = Some("legal hold".into());
    let kept = run(
        &cands,
        &policy(|p| p.keep_tags = vec!["release".into()]),
        "UTC",
    );
    assert_eq!(
        kept,
        vec![
            (1, vec![Keep::Rule(Reason::Tag("release".into()))]),
            (2, vec![Keep::Pinned("legal hold".into())]),
            (5, vec![Keep::Newest]),
        ]
    );
}

#[test]
fn a_dump_and_its_globals_are_kept_or_forgotten_together() {
    let mut cands = Vec::new();
    for n in 0..4u32 {
        let at = format!("2026-03-0{}T02:00:00", n + 1);
        cands.push(snap(2 * n, "shop", &at, "UTC"));
        let mut g = snap(2 * n + 1, "shop-globals", &at, "UTC");
        g.dump = Some(id(2 * n));
        cands.push(g);
    }
    // A pinned globals snapshot keeps its dump too.
    cands[1].pin = Some("audit".into());
    let kept = run(&cands, &policy(|p| p.keep_last = Some(1)), "UTC");
    assert_eq!(numbers(&kept), vec![0, 1, 6, 7]);
    assert!(kept[0].1.contains(&Keep::Companion(id(1))));
    assert!(kept[3].1.contains(&Keep::Companion(id(6))));
}

#[test]
fn jobs_are_grouped_by_host() {
    let mut a = snap(1, "db", "2026-03-01T00:00:00", "UTC");
    let mut b = snap(2, "db", "2026-03-02T00:00:00", "UTC");
    a.host = "host-a".into();
    b.host = "host-b".into();
    // Each host's only snapshot is its newest: neither forgets the other's.
    let kept = run(&[a, b], &policy(|p| p.keep_last = Some(1)), "UTC");
    assert_eq!(numbers(&kept), vec![1, 2]);
}

#[test]
fn explicit_ids_forget_exactly_those_with_their_companions() {
    let mut cands: Vec<_> = (0..3)
        .map(|n| snap(n, "shop", &format!("2026-03-0{}T10:00:00", n + 1), "UTC"))
        .collect();
    let mut g = snap(9, "shop-globals", "2026-03-03T10:00:00", "UTC");
    g.dump = Some(id(2));
    cands.push(g);
    let ids = [id(2)];
    let plan = plan(&cands, &Selection::Ids(&ids), &tz("UTC")).unwrap();
    let forgotten: BTreeSet<SnapshotId> = plan
        .iter()
        .flat_map(|g| &g.snapshots)
        .filter(|v| !v.keep)
        .map(|v| v.id)
        .collect();
    // The newest may be forgotten when named; its globals go with it.
    assert_eq!(forgotten, BTreeSet::from([id(2), id(9)]));

    cands[3].pin = Some("keep".into());
    let e = super::plan(&cands, &Selection::Ids(&ids), &tz("UTC")).unwrap_err();
    assert!(matches!(e, PlanError::Pinned { .. }), "{e}");
}

#[test]
fn a_policy_that_keeps_nothing_is_refused_and_no_policy_keeps_all() {
    let cands = vec![snap(1, "j", "2026-03-01T00:00:00", "UTC")];
    let zero = policy(|p| p.keep_last = Some(0));
    let f = |_: &str| Some(zero.clone());
    let e = plan(&cands, &Selection::Policies(&f), &tz("UTC")).unwrap_err();
    assert_eq!(e, PlanError::KeepsNothing { job: "j".into() });
    let none = |_: &str| None;
    let p = plan(&cands, &Selection::Policies(&none), &tz("UTC")).unwrap();
    assert_eq!(p[0].snapshots[0].reasons, vec![Keep::NoPolicy]);
}

#[test]
fn durations_parse_as_humantime_and_bad_ones_say_how() {
    assert_eq!(
        policy::parse_duration("30d").unwrap(),
        std::time::Duration::from_secs(30 * 86_400)
    );
    assert!(policy::parse_duration("1y 6months").is_ok());
    let e = policy::parse_duration("thirty days").unwrap_err();
    assert!(e.contains("30d"), "{e}");
    let toml_err = toml::from_str::<Policy>("keep-last = -1").unwrap_err();
    assert!(toml_err.message().contains("invalid value"), "{toml_err}");
    assert!(toml::from_str::<Policy>("keep-within = \"soon\"").is_err());
    assert!(toml::from_str::<Policy>("keep-everything = 1").is_err());
}
