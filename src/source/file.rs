//! A regular file, or standard input.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use vault_format::manifest::kinds;

use super::Source;
use crate::error::{Error, Result};

/// A regular file.
pub struct FileSource {
    path: PathBuf,
    file: File,
}

impl FileSource {
    /// Opens a file.
    ///
    /// # Errors
    /// [`Error::Source`] when it cannot be opened.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::Source {
            what: path.display().to_string(),
            detail: e.to_string(),
        })?;
        Ok(FileSource {
            path: path.to_path_buf(),
            file,
        })
    }
}

impl Source for FileSource {
    fn kind(&self) -> &str {
        kinds::FILE
    }
    fn reader(&mut self) -> &mut (dyn Read + Send) {
        &mut self.file
    }
    fn finish(&mut self) -> Result<serde_json::Map<String, serde_json::Value>> {
        let mut m = serde_json::Map::new();
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        m.insert("file_name".into(), name.into());
        m.insert(
            "path".into(),
            crate::vault::settings::absolute(&self.path)
                .display()
                .to_string()
                .into(),
        );
        Ok(m)
    }
}

/// Standard input.
pub struct StdinSource {
    stdin: io::Stdin,
}

impl StdinSource {
    /// Wraps this process's standard input.
    pub fn new() -> Self {
        StdinSource { stdin: io::stdin() }
    }
}

impl Default for StdinSource {
    fn default() -> Self {
        Self::new()
    }
}

impl Source for StdinSource {
    fn kind(&self) -> &str {
        kinds::STDIN
    }
    fn reader(&mut self) -> &mut (dyn Read + Send) {
        &mut self.stdin
    }
    fn finish(&mut self) -> Result<serde_json::Map<String, serde_json::Value>> {
        Ok(serde_json::Map::new())
    }
}
