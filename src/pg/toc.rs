//! The table of contents of a custom-format archive, read with
//! `pg_restore --list` from the stream itself as it passes by.
//!
//! pg_dump writes the TOC at the head of a custom-format archive (before any
//! table data), and `pg_restore --list` exits as soon as it has read it, so
//! teeing the first bytes of a backup or restore stream into it costs
//! nothing and gives the archive's own word on which tables have data in
//! it. `TABLE DATA` entries carry the table's OID (`0 <oid> TABLE DATA ...`),
//! which is how they are matched with the facts recorded at backup time
//! (names in the listing are ambiguous when they contain spaces).

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{ChildStdin, Stdio};
use std::thread::JoinHandle;

use super::{tools, PgError};

/// One line of `pg_restore --list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TocEntry {
    /// Dump id.
    pub dump_id: i64,
    /// OID of the catalog the object lives in (0 for table data).
    pub catalog: u32,
    /// The object's OID (the table's for `TABLE DATA`).
    pub oid: u32,
    /// The rest: `DESC namespace tag owner`.
    pub text: String,
}

/// A parsed listing.
#[derive(Debug, Clone, Default)]
pub struct Toc {
    /// The entries, in archive order.
    pub entries: Vec<TocEntry>,
}

impl Toc {
    /// Parses `pg_restore --list` output (comment lines start with `;`).
    pub fn parse(text: &str) -> Toc {
        let entries = text
            .lines()
            .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
            .filter_map(|l| {
                let (id, rest) = l.split_once(';')?;
                let mut parts = rest.trim_start().splitn(3, ' ');
                Some(TocEntry {
                    dump_id: id.trim().parse().ok()?,
                    catalog: parts.next()?.parse().ok()?,
                    oid: parts.next()?.parse().ok()?,
                    text: parts.next().unwrap_or("").to_string(),
                })
            })
            .collect();
        Toc { entries }
    }

    /// OIDs of the tables whose data is in the archive.
    pub fn table_data_oids(&self) -> BTreeSet<u32> {
        self.entries
            .iter()
            .filter(|e| e.text.starts_with("TABLE DATA "))
            .map(|e| e.oid)
            .collect()
    }

    /// Whether the archive holds large objects (`BLOBS` up to PostgreSQL 16,
    /// `LARGE OBJECTS` / `BLOB METADATA` from 17).
    pub fn has_large_objects(&self) -> bool {
        self.entries.iter().any(|e| {
            e.text.starts_with("BLOBS ")
                || e.text.starts_with("BLOB ")
                || e.text.starts_with("LARGE OBJECT")
                || e.text.starts_with("BLOB METADATA")
        })
    }
}

/// The feeding end of a running `pg_restore --list`: bytes written to it go
/// to the lister until it has read the TOC and exited; after that (or any
/// error) writes are dropped. Never fails the stream it is teeing.
pub struct TocFeed {
    stdin: Option<ChildStdin>,
}

impl TocFeed {
    /// Passes `buf` on while the lister still reads.
    pub fn feed(&mut self, buf: &[u8]) {
        if let Some(s) = &mut self.stdin {
            if s.write_all(buf).is_err() {
                self.stdin = None;
            }
        }
    }

    /// End of stream.
    pub fn close(&mut self) {
        self.stdin = None;
    }
}

/// Starts `pg_restore --list [ARGS]` reading stdin; returns its feed and a
/// thread that yields the parsed listing once it exits.
///
/// # Errors
/// [`PgError::Missing`] when pg_restore cannot be started.
pub fn start(args: &[String]) -> Result<(TocFeed, JoinHandle<Result<Toc, PgError>>), PgError> {
    let mut child = tools::command("pg_restore")
        .arg("--list")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| tools::spawn_error("pg_restore", e))?;
    let stdin = child.stdin.take();
    let handle = std::thread::Builder::new()
        .name("pg_restore-list".into())
        .spawn(move || -> Result<Toc, PgError> {
            let out = child.wait_with_output().map_err(|e| PgError::Tool {
                program: "pg_restore --list".into(),
                detail: e.to_string(),
            })?;
            if !out.status.success() {
                return Err(PgError::Tool {
                    program: "pg_restore --list".into(),
                    detail: tools::describe_exit(out.status, &String::from_utf8_lossy(&out.stderr)),
                });
            }
            Ok(Toc::parse(&String::from_utf8_lossy(&out.stdout)))
        })
        .map_err(|e| PgError::Tool {
            program: "pg_restore --list".into(),
            detail: e.to_string(),
        })?;
    Ok((TocFeed { stdin }, handle))
}

/// Joins a lister thread.
pub fn join(h: JoinHandle<Result<Toc, PgError>>) -> Result<Toc, PgError> {
    h.join().unwrap_or_else(|_| {
        Err(PgError::Tool {
            program: "pg_restore --list".into(),
            detail: "the listing thread panicked".into(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_listing() {
        let text = ";\n; Archive created at 2026-11-24\n;\n6; 2615 16385 SCHEMA - app postgres\n\
            216; 1259 16387 TABLE app tenants postgres\n\
            230; 1259 16511 TABLE public my table postgres\n\
            3450; 2613 424242 BLOB - 424242 postgres\n\
            3435; 0 16387 TABLE DATA app tenants postgres\n\
            3448; 0 16511 TABLE DATA public my table postgres\n\
            3451; 0 0 BLOBS - BLOBS \n";
        let toc = Toc::parse(text);
        assert_eq!(toc.entries.len(), 7);
        assert_eq!(toc.entries[0].text, "SCHEMA - app postgres");
        assert_eq!(
            toc.table_data_oids().into_iter().collect::<Vec<_>>(),
            vec![16387, 16511]
        );
        assert!(toc.has_large_objects());
        let data_only = Toc::parse("3435; 0 16387 TABLE DATA app tenants postgres\n");
        assert!(!data_only.has_large_objects());
    }
}
