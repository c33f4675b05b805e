//! The restored database against the facts recorded at backup time: per
//! table its row count and (where recorded and comparable) its content
//! checksum, and the large objects. Used by `coffer restore --dbname` and
//! by restore drills.

use std::collections::BTreeSet;

use serde::Serialize;

use super::facts::{self, TableFact};
use super::recorded::RecordedFacts;
use super::toc::Toc;
use super::{db_error, Db, PgError};

/// One difference between the restored database and the recorded facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// `schema.table`, or `large objects`.
    pub table: String,
    /// What differs, in words.
    pub problem: String,
    /// Rows (or large objects) at backup time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_rows: Option<i64>,
    /// Rows (or large objects) found after the restore.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restored_rows: Option<i64>,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.table, self.problem)
    }
}

/// The restored database against the recorded facts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Comparison {
    /// Tables counted.
    pub tables_compared: usize,
    /// Rows expected in them.
    pub rows_compared: i64,
    /// Tables whose content checksum was compared too.
    pub checksums_compared: usize,
    /// Large objects compared (expected, restored), when they were.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub large_objects: Option<(i64, i64)>,
    /// What differs (empty: the restore matches).
    pub differences: Vec<Difference>,
    /// Why some things were not compared.
    pub notes: Vec<String>,
}

/// Compares the database `db` is connected to with the recorded facts, for
/// the tables whose data `toc` (the restore's own listing) holds.
/// `fresh` says the database held nothing before (then large objects are
/// compared too); `everything` says the restore was not selective (then
/// every recorded table must be in the archive).
///
/// # Errors
/// Queries against the restored database failed.
pub(crate) fn compare(
    db: &Db,
    recorded: &RecordedFacts,
    toc: &Toc,
    fresh: bool,
    everything: bool,
) -> Result<Comparison, PgError> {
    let tables = recorded.tables.clone().unwrap_or_default();
    let in_archive = toc.table_data_oids();
    let mut c = Comparison::default();
    let checksums = checksums_comparable(db, recorded, &tables, &mut c.notes)?;
    if everything {
        missing_from_archive(&tables, &in_archive, &mut c);
    }
    db.run(facts::pin_session(db.client()))?;
    for t in tables.iter().filter(|t| in_archive.contains(&t.oid)) {
        compare_table(db, t, checksums && t.md5.is_some(), &mut c)?;
    }
    if fresh && toc.has_large_objects() {
        if let Some(expected) = recorded.large_objects {
            let found = db.run(facts::large_objects(db.client()))?;
            c.large_objects = Some((expected, found));
            if found != expected {
                c.differences.push(Difference {
                    table: "large objects".into(),
                    problem: format!("{expected} at backup time, {found} restored"),
                    expected_rows: Some(expected),
                    restored_rows: Some(found),
                });
            }
        }
    }
    Ok(c)
}

/// Whether content checksums can be compared: recorded with this coffer's
/// recipe, on the same major version and encoding (value text may differ
/// otherwise). Says why not in `notes`.
fn checksums_comparable(
    db: &Db,
    recorded: &RecordedFacts,
    tables: &[TableFact],
    notes: &mut Vec<String>,
) -> Result<bool, PgError> {
    let (major, encoding) = db.run(async {
        let r = db
            .client()
            .query_one(
                "SELECT current_setting('server_version_num')::int4, pg_encoding_to_char(encoding)::text \
                   FROM pg_database WHERE datname = current_database()",
                &[],
            )
            .await
            .map_err(|e| PgError::Query {
                what: "reading the restored database's settings".into(),
                detail: db_error(&e),
            })?;
        Ok::<_, PgError>((r.get::<_, i32>(0) / 10000, r.get::<_, String>(1)))
    })?;
    let mut checksums = recorded.checksum_comparable();
    if checksums && tables.iter().any(|t| t.md5.is_some()) {
        if let Some(src) = recorded.server_version_num.map(|v| v / 10000) {
            if src != major {
                checksums = false;
                notes.push(format!(
                    "content checksums not compared: the backup is from PostgreSQL {src}, the restore on {major} (value text may differ between major versions)"
                ));
            }
        }
        if let Some(enc) = &recorded.encoding {
            if *enc != encoding {
                checksums = false;
                notes.push(format!(
                    "content checksums not compared: the backup's encoding is {enc}, the restored database's {encoding}"
                ));
            }
        }
    }
    Ok(checksums)
}

/// For a whole-database restore: every recorded table must be in the
/// archive; tables in the archive without facts are noted.
fn missing_from_archive(tables: &[TableFact], in_archive: &BTreeSet<u32>, c: &mut Comparison) {
    let recorded_oids: BTreeSet<u32> = tables.iter().map(|t| t.oid).collect();
    for t in tables.iter().filter(|t| !in_archive.contains(&t.oid)) {
        c.differences.push(Difference {
            table: t.display(),
            problem: format!(
                "{} rows at backup time, but the archive holds no data for it",
                t.rows
            ),
            expected_rows: Some(t.rows),
            restored_rows: None,
        });
    }
    let unrecorded = in_archive.difference(&recorded_oids).count();
    if unrecorded > 0 {
        c.notes.push(format!(
            "{unrecorded} table(s) in the archive have no recorded facts"
        ));
    }
}

/// One table: present, same rows, and (with `want_md5`) same content.
fn compare_table(
    db: &Db,
    t: &TableFact,
    want_md5: bool,
    c: &mut Comparison,
) -> Result<(), PgError> {
    let found = db.run(facts::measure_if_exists(
        db.client(),
        &t.schema,
        &t.name,
        want_md5,
    ))?;
    c.tables_compared += 1;
    c.rows_compared += t.rows;
    let difference = |problem: String, restored_rows| Difference {
        table: t.display(),
        problem,
        expected_rows: Some(t.rows),
        restored_rows,
    };
    match found {
        None => c.differences.push(difference(
            format!(
                "missing from the restored database ({} rows at backup time)",
                t.rows
            ),
            None,
        )),
        Some((rows, _)) if rows != t.rows => c.differences.push(difference(
            format!("{} rows at backup time, {rows} restored", t.rows),
            Some(rows),
        )),
        Some((rows, md5)) if want_md5 => {
            c.checksums_compared += 1;
            if md5 != t.md5 {
                c.differences.push(difference(
                    format!(
                        "content differs: same row count ({rows}), but the content checksum does not match the one recorded at backup time"
                    ),
                    Some(rows),
                ));
            }
        }
        Some(_) => {}
    }
    Ok(())
}
