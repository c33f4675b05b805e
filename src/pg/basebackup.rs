//! What a physical base backup records (in its manifest's `source`), and
//! how `backup_label` and `backup_manifest` are read.

use serde::{Deserialize, Serialize};
use vault_format::wal::{Lsn, SegmentName};

/// Snapshot kind of a physical base backup (a tar stream of the data
/// directory by `pg_basebackup -Ft -X none`; with tablespaces, their
/// files under `pg_tblspc/<oid>/` in the same stream).
pub const KIND_BASE: &str = "pg_basebackup";

/// A base backup's facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseFacts {
    /// The cluster's system identifier (decimal).
    pub system_identifier: String,
    /// `server_version_num`.
    pub server_version_num: i32,
    /// WAL segment size in bytes.
    pub segment_size: u64,
    /// The timeline the backup started on.
    pub timeline: u32,
    /// `START WAL LOCATION` of `backup_label`.
    pub start_lsn: String,
    /// The end of the WAL the backup needs (`backup_manifest` WAL-Ranges).
    pub stop_lsn: String,
    /// The timeline the backup ended on.
    pub stop_timeline: u32,
    /// The first WAL segment it needs.
    pub start_wal: String,
    /// The last WAL segment it needs.
    pub stop_wal: String,
    /// When pg_basebackup had finished (coffer's clock, RFC 3339): a
    /// recovery target time must be later.
    pub stopped_at: String,
    /// The `backup_label` file.
    pub backup_label: String,
    /// Bytes of `backup_manifest` (in the tar, for `pg_verifybackup`).
    pub backup_manifest_size: u64,
    /// The tablespaces outside the data directory (their files are under
    /// `pg_tblspc/<oid>/` in the stream). Absent in older snapshots.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tablespaces: Vec<Tablespace>,
}

/// A tablespace outside the data directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tablespace {
    /// Its OID.
    pub oid: u32,
    /// Where it was on the backed-up server.
    pub location: String,
}

impl BaseFacts {
    /// Reads the facts back from a manifest's `source`.
    pub fn from_source(source: &serde_json::Map<String, serde_json::Value>) -> Option<Self> {
        serde_json::from_value(source.get("physical")?.clone()).ok()
    }

    /// The start LSN.
    pub fn start(&self) -> Option<Lsn> {
        self.start_lsn.parse().ok()
    }

    /// The stop LSN.
    pub fn stop(&self) -> Option<Lsn> {
        self.stop_lsn.parse().ok()
    }

    /// The WAL segments (by name) from start to stop, on the backup's
    /// timelines, that recovery needs before the backup is consistent.
    pub fn needed_segments(&self) -> Vec<String> {
        let (Some(start), Some(stop)) = (self.start(), self.stop()) else {
            return Vec::new();
        };
        let seg = self.segment_size.max(1);
        let first = SegmentName::holding(self.timeline, start, seg).segno(seg);
        // A stop exactly on a segment boundary needs nothing of that segment.
        let last = SegmentName::holding(self.stop_timeline, Lsn(stop.0.saturating_sub(1)), seg)
            .segno(seg)
            .max(first);
        (first..=last)
            .map(|n| {
                let tli = if n == last {
                    self.stop_timeline
                } else {
                    self.timeline
                };
                SegmentName::from_segno(tli, n, seg).to_string()
            })
            .collect()
    }
}

/// `START WAL LOCATION: 0/2000028 (file 000000010000000000000002)` and
/// `START TIMELINE: 1` of a `backup_label`.
pub fn parse_label(label: &str) -> Option<(Lsn, u32)> {
    let mut lsn = None;
    let mut tli = None;
    for line in label.lines() {
        if let Some(rest) = line.strip_prefix("START WAL LOCATION: ") {
            lsn = rest.split_whitespace().next()?.parse().ok();
        } else if let Some(rest) = line.strip_prefix("START TIMELINE: ") {
            tli = rest.trim().parse().ok();
        }
    }
    Some((lsn?, tli?))
}

/// The last `WAL-Ranges` entry of a `backup_manifest`: `(timeline, end)`.
pub fn parse_manifest_end(manifest: &[u8]) -> Option<(u32, Lsn)> {
    #[derive(Deserialize)]
    struct Range {
        #[serde(rename = "Timeline")]
        timeline: u32,
        #[serde(rename = "End-LSN")]
        end: String,
    }
    #[derive(Deserialize)]
    struct Manifest {
        #[serde(rename = "WAL-Ranges")]
        ranges: Vec<Range>,
    }
    let m: Manifest = serde_json::from_slice(manifest).ok()?;
    // The ranges are listed newest timeline first.
    let r = m.ranges.first()?;
    Some((r.timeline, r.end.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_and_manifest_are_read() {
        let label = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n\
                     CHECKPOINT LOCATION: 0/2000060\nSTART TIMELINE: 1\n";
        assert_eq!(parse_label(label), Some((Lsn(0x2000028), 1)));
        let m = br#"{"PostgreSQL-Backup-Manifest-Version": 1, "Files": [],
            "WAL-Ranges": [{ "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/3000100" }]}"#;
        assert_eq!(parse_manifest_end(m), Some((1, Lsn(0x3000100))));
    }

    #[test]
    fn needed_segments_span_start_to_stop() {
        let f = BaseFacts {
            system_identifier: "1".into(),
            server_version_num: 150000,
            segment_size: 16 << 20,
            timeline: 1,
            start_lsn: "0/2000028".into(),
            stop_lsn: "0/4000000".into(),
            stop_timeline: 1,
            start_wal: String::new(),
            stop_wal: String::new(),
            stopped_at: String::new(),
            backup_label: String::new(),
            backup_manifest_size: 0,
            tablespaces: Vec::new(),
        };
        assert_eq!(
            f.needed_segments(),
            vec!["000000010000000000000002", "000000010000000000000003"]
        );
    }
}
