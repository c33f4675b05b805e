//! How coffer's types are stored in SQLite columns.
//!
//! Every id and enum converts through rusqlite's `ToSql`/`FromSql`, so a row
//! that does not hold what its column promises (a 31-byte pack id, a copy
//! state nobody writes) is a conversion error — reported by
//! [`super::CatalogError::Damaged`] with the advice to rebuild — instead of
//! a zero id or a default state that would silently point elsewhere.
//!
//! Ids live in the format crate, so they are wrapped in [`Sql`] here (the
//! orphan rule keeps `impl FromSql for PackId` out of this crate, and the
//! format crate stays free of SQLite).

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use vault_format::{ChunkId, PackId, SnapshotId};

use super::{CopyState, Outcome, RunKind};

/// An id as a column value: 32-byte BLOBs for chunk and pack ids, 32 hex
/// digits TEXT for snapshot ids (as the schema has always stored them).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sql<T>(pub T);

fn other(detail: impl Into<String>) -> FromSqlError {
    FromSqlError::Other(detail.into().into())
}

impl ToSql for Sql<PackId> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(ValueRef::Blob(self.0.as_bytes())))
    }
}

impl FromSql for Sql<PackId> {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        PackId::from_slice(v.as_blob()?)
            .map(Sql)
            .ok_or_else(|| other("a pack id is not 32 bytes"))
    }
}

impl ToSql for Sql<ChunkId> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(ValueRef::Blob(self.0.as_bytes())))
    }
}

impl FromSql for Sql<ChunkId> {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        ChunkId::from_slice(v.as_blob()?)
            .map(Sql)
            .ok_or_else(|| other("a chunk id is not 32 bytes"))
    }
}

impl ToSql for Sql<SnapshotId> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Owned(self.0.to_hex().into()))
    }
}

impl FromSql for Sql<SnapshotId> {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        v.as_str()?
            .parse()
            .map(Sql)
            .map_err(|_| other("a snapshot id is not 32 hex digits"))
    }
}

/// Enums stored as the words the schema's CHECK constraints allow.
macro_rules! word_enum {
    ($t:ty, $what:literal) => {
        impl ToSql for $t {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::Borrowed(ValueRef::Text(
                    self.as_str().as_bytes(),
                )))
            }
        }

        impl FromSql for $t {
            fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
                let s = v.as_str()?;
                <$t>::parse(s).ok_or_else(|| other(format!("unknown {} {s:?}", $what)))
            }
        }
    };
}

word_enum!(CopyState, "copy state");
word_enum!(Outcome, "run outcome");
word_enum!(RunKind, "run kind");

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    #[test]
    fn a_malformed_id_or_state_is_an_error_not_a_default() {
        let c = Connection::open_in_memory().unwrap();
        let short: rusqlite::Result<Sql<PackId>> = c.query_row("SELECT x'0102'", [], |r| r.get(0));
        assert!(short.is_err());
        let bad: rusqlite::Result<CopyState> = c.query_row("SELECT 'lost'", [], |r| r.get(0));
        assert!(bad.is_err());
        let good: CopyState = c.query_row("SELECT 'corrupt'", [], |r| r.get(0)).unwrap();
        assert_eq!(good, CopyState::Corrupt);
        let id = PackId([7; 32]);
        let back: Sql<PackId> = c.query_row("SELECT ?1", [Sql(id)], |r| r.get(0)).unwrap();
        assert_eq!(back.0, id);
        let s = SnapshotId([9; 16]);
        let back: Sql<SnapshotId> = c.query_row("SELECT ?1", [Sql(s)], |r| r.get(0)).unwrap();
        assert_eq!(back.0, s);
    }
}
