//! WAL files as PostgreSQL names and writes them, and as coffer archives
//! them.
//!
//! - [`WalFile`]: the four kinds of file `archive_command` is handed
//!   (segments, `.partial` segments, `.backup` history files and timeline
//!   `.history` files), parsed from their names.
//! - [`SegmentHeader`]: the long page header at the start of every segment,
//!   which says which cluster (system identifier) and which position (page
//!   address) the bytes belong to; [`SegmentHeader::check`] refuses a file
//!   whose content does not match its name.
//! - [`object`]: the sealed form of one archived file, and the batches that
//!   carry many of them to an offsite tier in one object.
//!
//! Byte layouts follow PostgreSQL's `access/xlog_internal.h` (12 and later).
//! PostgreSQL writes WAL in the machine's byte order; coffer reads it as
//! little-endian, which is what every platform it runs on uses.

pub mod object;

use std::fmt;
use std::str::FromStr;

use crate::error::{FormatError, Result};

/// A log sequence number, printed as PostgreSQL prints it (`16/B374D848`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xffff_ffff)
    }
}

impl FromStr for Lsn {
    type Err = FormatError;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || FormatError::corrupt("LSN", format!("{s:?} is not of the form 16/B374D848"));
        let (hi, lo) = s.trim().split_once('/').ok_or_else(bad)?;
        let hi = u32::from_str_radix(hi, 16).map_err(|_| bad())?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| bad())?;
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

/// A segment's name: timeline and position (`000000010000000A000000FE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentName {
    /// Timeline.
    pub tli: u32,
    /// High 32 bits of the segment's position ("log").
    pub log: u32,
    /// Segment within the log.
    pub seg: u32,
}

impl SegmentName {
    /// Segments per "log" (4 GiB of WAL) for a segment size.
    fn per_log(seg_size: u64) -> u64 {
        0x1_0000_0000 / seg_size
    }

    /// The segment number (position / segment size).
    pub fn segno(&self, seg_size: u64) -> u64 {
        u64::from(self.log) * Self::per_log(seg_size) + u64::from(self.seg)
    }

    /// The segment `segno` on timeline `tli`.
    pub fn from_segno(tli: u32, segno: u64, seg_size: u64) -> Self {
        let per = Self::per_log(seg_size);
        SegmentName {
            tli,
            log: (segno / per) as u32,
            seg: (segno % per) as u32,
        }
    }

    /// The segment holding `lsn` on timeline `tli`.
    pub fn holding(tli: u32, lsn: Lsn, seg_size: u64) -> Self {
        Self::from_segno(tli, lsn.0 / seg_size, seg_size)
    }

    /// The LSN of the segment's first byte.
    pub fn start_lsn(&self, seg_size: u64) -> Lsn {
        Lsn(self.segno(seg_size) * seg_size)
    }

    fn parse(s: &str) -> Option<Self> {
        if s.len() != 24 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let h = |r: std::ops::Range<usize>| u32::from_str_radix(&s[r], 16).ok();
        Some(SegmentName {
            tli: h(0..8)?,
            log: h(8..16)?,
            seg: h(16..24)?,
        })
    }
}

impl fmt::Display for SegmentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08X}{:08X}{:08X}", self.tli, self.log, self.seg)
    }
}

/// A file `archive_command` may be handed, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WalFile {
    /// A complete segment.
    Segment(SegmentName),
    /// The last, incomplete segment of a timeline that ended (`.partial`).
    Partial(SegmentName),
    /// A backup history file: `<segment>.<offset>.backup`.
    BackupHistory {
        /// The segment the backup started in.
        segment: SegmentName,
        /// The start offset within it.
        offset: u32,
    },
    /// A timeline history file: `<tli>.history`.
    TimelineHistory {
        /// The timeline it describes.
        tli: u32,
    },
}

impl WalFile {
    /// Parses a file name (no directory).
    ///
    /// # Errors
    /// [`FormatError::Corrupt`] for a name PostgreSQL would not archive.
    pub fn parse(name: &str) -> Result<Self> {
        let bad = || {
            FormatError::corrupt(
                "WAL file name",
                format!("{name:?} is not a WAL segment, .partial, .backup or .history file name"),
            )
        };
        if let Some(seg) = SegmentName::parse(name) {
            return Ok(WalFile::Segment(seg));
        }
        if let Some(stem) = name.strip_suffix(".partial") {
            return SegmentName::parse(stem)
                .map(WalFile::Partial)
                .ok_or_else(bad);
        }
        if let Some(stem) = name.strip_suffix(".backup") {
            let (seg, off) = stem.split_once('.').ok_or_else(bad)?;
            if off.len() != 8 {
                return Err(bad());
            }
            return Ok(WalFile::BackupHistory {
                segment: SegmentName::parse(seg).ok_or_else(bad)?,
                offset: u32::from_str_radix(off, 16).map_err(|_| bad())?,
            });
        }
        if let Some(tli) = name.strip_suffix(".history") {
            if tli.len() == 8 && tli.bytes().all(|b| b.is_ascii_hexdigit()) {
                let tli = u32::from_str_radix(tli, 16).map_err(|_| bad())?;
                return Ok(WalFile::TimelineHistory { tli });
            }
        }
        Err(bad())
    }

    /// The name PostgreSQL gives the file.
    pub fn name(&self) -> String {
        match self {
            WalFile::Segment(s) => s.to_string(),
            WalFile::Partial(s) => format!("{s}.partial"),
            WalFile::BackupHistory { segment, offset } => format!("{segment}.{offset:08X}.backup"),
            WalFile::TimelineHistory { tli } => format!("{tli:08X}.history"),
        }
    }

    /// The segment whose bytes the file holds (complete or partial).
    pub fn segment(&self) -> Option<SegmentName> {
        match self {
            WalFile::Segment(s) | WalFile::Partial(s) => Some(*s),
            _ => None,
        }
    }

    /// The timeline the file belongs to.
    pub fn tli(&self) -> u32 {
        match self {
            WalFile::Segment(s) | WalFile::Partial(s) => s.tli,
            WalFile::BackupHistory { segment, .. } => segment.tli,
            WalFile::TimelineHistory { tli } => *tli,
        }
    }

    /// A short word for messages and the catalog.
    pub fn kind(&self) -> &'static str {
        match self {
            WalFile::Segment(_) => "segment",
            WalFile::Partial(_) => "partial",
            WalFile::BackupHistory { .. } => "backup",
            WalFile::TimelineHistory { .. } => "history",
        }
    }
}

impl WalFile {
    /// For a segment or partial segment: parses the header of its `content`
    /// and checks it against the name ([`SegmentHeader::check`]). `None`
    /// for history files, which have no header.
    ///
    /// # Errors
    /// As [`SegmentHeader::parse`] and [`SegmentHeader::check`].
    pub fn check_content(&self, content: &[u8]) -> Result<Option<SegmentHeader>> {
        self.check_start(content, content.len() as u64)
    }

    /// [`WalFile::check_content`] from the file's first bytes (at least its
    /// first page header) and its length, for a file read in pieces.
    ///
    /// # Errors
    /// As [`SegmentHeader::parse`] and [`SegmentHeader::check`].
    pub fn check_start(&self, start: &[u8], len: u64) -> Result<Option<SegmentHeader>> {
        let Some(seg) = self.segment() else {
            return Ok(None);
        };
        let h = SegmentHeader::parse(start)?;
        h.check(&seg, len, matches!(self, WalFile::Partial(_)))?;
        Ok(Some(h))
    }
}

impl fmt::Display for WalFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// `XLP_LONG_HEADER`: the first page of a segment has the long header.
const XLP_LONG_HEADER: u16 = 0x0002;
/// Bytes of `XLogLongPageHeaderData` we read.
pub const LONG_HEADER_LEN: usize = 40;

/// The long page header at the start of a WAL segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// `xlp_magic`: changes with every PostgreSQL major version's WAL format.
    pub magic: u16,
    /// `xlp_tli`: the timeline of the first page (on a new timeline's first
    /// segment this is still the old timeline).
    pub tli: u32,
    /// `xlp_pageaddr`: the LSN of the page, i.e. of the segment's start.
    pub page_addr: u64,
    /// `xlp_sysid`: the cluster's system identifier.
    pub system_identifier: u64,
    /// `xlp_seg_size`.
    pub seg_size: u32,
    /// `xlp_xlog_blcksz`.
    pub block_size: u32,
}

impl SegmentHeader {
    /// Reads the header from the first bytes of a segment.
    ///
    /// # Errors
    /// [`FormatError::Truncated`] or [`FormatError::Corrupt`] when the bytes
    /// are not the start of a WAL segment of PostgreSQL 12 or later.
    pub fn parse(data: &[u8]) -> Result<Self> {
        const WHAT: &str = "WAL segment header";
        if data.len() < LONG_HEADER_LEN {
            return Err(FormatError::Truncated { what: WHAT });
        }
        let h = SegmentHeader {
            magic: u16::from_le_bytes(bytes_at(data, 0, WHAT)?),
            tli: u32::from_le_bytes(bytes_at(data, 4, WHAT)?),
            page_addr: u64::from_le_bytes(bytes_at(data, 8, WHAT)?),
            system_identifier: u64::from_le_bytes(bytes_at(data, 24, WHAT)?),
            seg_size: u32::from_le_bytes(bytes_at(data, 32, WHAT)?),
            block_size: u32::from_le_bytes(bytes_at(data, 36, WHAT)?),
        };
        let info = u16::from_le_bytes(bytes_at(data, 2, WHAT)?);
        // 0xD101 is PostgreSQL 12's magic; each later major version adds a
        // few. Older versions have no place in a PG 12+ tool.
        if !(0xD101..0xD200).contains(&h.magic) {
            return Err(FormatError::corrupt(
                WHAT,
                format!("magic {:#06x} is not PostgreSQL 12 or later WAL", h.magic),
            ));
        }
        if info & XLP_LONG_HEADER == 0 {
            return Err(FormatError::corrupt(
                WHAT,
                "first page lacks the long header",
            ));
        }
        if !h.seg_size.is_power_of_two() || !(1 << 20..=1 << 30).contains(&h.seg_size) {
            return Err(FormatError::corrupt(
                WHAT,
                format!(
                    "segment size {} is not a power of two from 1 MiB to 1 GiB",
                    h.seg_size
                ),
            ));
        }
        if !h.block_size.is_power_of_two() || h.block_size < 1024 || h.block_size > h.seg_size {
            return Err(FormatError::corrupt(
                WHAT,
                format!("block size {} is not valid", h.block_size),
            ));
        }
        Ok(h)
    }

    /// Checks that a file of `len` bytes with this header is the segment
    /// `name` says it is.
    ///
    /// # Errors
    /// [`FormatError::Corrupt`] naming the mismatch.
    pub fn check(&self, name: &SegmentName, len: u64, partial: bool) -> Result<()> {
        const WHAT: &str = "WAL segment";
        let seg_size = u64::from(self.seg_size);
        let expected = name.start_lsn(seg_size);
        if self.page_addr != expected.0 {
            return Err(FormatError::corrupt(
                WHAT,
                format!(
                    "{name} holds the page at {} but should start at {expected}",
                    Lsn(self.page_addr)
                ),
            ));
        }
        // A .partial file is written full-size too; accept a shorter one
        // (it is only ever the tail of a timeline).
        if len != seg_size && !(partial && len < seg_size) {
            return Err(FormatError::corrupt(
                WHAT,
                format!("{name} is {len} bytes; its header says segments are {seg_size}"),
            ));
        }
        Ok(())
    }
}

/// The `N` bytes of `data` at `at`, or [`FormatError::Truncated`]: decoders
/// read fixed-size fields through this, never by indexing.
pub(crate) fn bytes_at<const N: usize>(
    data: &[u8],
    at: usize,
    what: &'static str,
) -> Result<[u8; N]> {
    at.checked_add(N)
        .and_then(|end| data.get(at..end))
        .and_then(|b| b.try_into().ok())
        .ok_or(FormatError::Truncated { what })
}

#[cfg(test)]
mod tests;
