//! A stream already in memory (the cluster globals, a few KiB).

use std::io::{Cursor, Read};

use super::Source;

/// A stream already in memory (the globals, a few KiB), as a backup source.
pub struct MemorySource {
    kind: String,
    data: Cursor<Vec<u8>>,
    facts: serde_json::Map<String, serde_json::Value>,
}

impl MemorySource {
    /// Wraps `data` with its kind and facts.
    pub fn new(
        kind: &str,
        data: Vec<u8>,
        facts: serde_json::Map<String, serde_json::Value>,
    ) -> Self {
        MemorySource {
            kind: kind.to_string(),
            data: Cursor::new(data),
            facts,
        }
    }
}

impl Source for MemorySource {
    fn kind(&self) -> &str {
        &self.kind
    }
    fn reader(&mut self) -> &mut (dyn Read + Send) {
        &mut self.data
    }
    fn finish(&mut self) -> crate::Result<serde_json::Map<String, serde_json::Value>> {
        Ok(self.facts.clone())
    }
}
