//! The facts a dump snapshot's manifest records, as restores and drills
//! read them back: which selection was dumped, the source server, and per
//! table its rows and content checksum.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::facts::{self, TableFact};

/// pg_dump's selection options, passed through and recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selection {
    /// `--schema-only`.
    #[serde(default)]
    pub schema_only: bool,
    /// `--data-only`.
    #[serde(default)]
    pub data_only: bool,
    /// `--table` patterns.
    #[serde(default)]
    pub tables: Vec<String>,
    /// `--exclude-table` patterns.
    #[serde(default)]
    pub exclude_tables: Vec<String>,
    /// `--schema` patterns.
    #[serde(default)]
    pub schemas: Vec<String>,
}

impl Selection {
    /// pg_dump arguments.
    pub fn args(&self) -> Vec<String> {
        let mut a = Vec::new();
        if self.schema_only {
            a.push("--schema-only".into());
        }
        if self.data_only {
            a.push("--data-only".into());
        }
        a.extend(self.schemas.iter().map(|s| format!("--schema={s}")));
        a.extend(self.tables.iter().map(|t| format!("--table={t}")));
        a.extend(
            self.exclude_tables
                .iter()
                .map(|t| format!("--exclude-table={t}")),
        );
        a
    }

    /// True when the whole database is dumped.
    pub fn is_everything(&self) -> bool {
        *self == Selection::default()
    }
}

/// The manifest facts of a dump snapshot, parsed (for restores and drills).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RecordedFacts {
    /// Database name.
    #[serde(default)]
    pub database: Option<String>,
    /// `server_version_num` of the source.
    #[serde(default)]
    pub server_version_num: Option<i32>,
    /// `server_version` of the source.
    #[serde(default)]
    pub server_version: Option<String>,
    /// Encoding of the source database.
    #[serde(default)]
    pub encoding: Option<String>,
    /// `LC_COLLATE` of the source database.
    #[serde(default)]
    pub collate: Option<String>,
    /// `LC_CTYPE` of the source database.
    #[serde(default)]
    pub ctype: Option<String>,
    /// Selection options.
    #[serde(default)]
    pub selection: Option<Selection>,
    /// Large objects in the source.
    #[serde(default)]
    pub large_objects: Option<i64>,
    /// Table facts (absent: nothing to compare).
    #[serde(default)]
    pub tables: Option<Vec<TableFact>>,
    /// Checksum recipe.
    #[serde(default)]
    pub checksum: Option<Value>,
}

impl RecordedFacts {
    /// Parses a manifest's `source` map.
    pub fn of(source: &Map<String, Value>) -> RecordedFacts {
        serde_json::from_value(Value::Object(source.clone())).unwrap_or_default()
    }

    /// Whether checksums were recorded with the recipe this coffer computes.
    pub fn checksum_comparable(&self) -> bool {
        self.checksum
            .as_ref()
            .and_then(|c| c.get("algorithm"))
            .and_then(Value::as_str)
            == Some(facts::CHECKSUM_ALGORITHM)
    }
}
