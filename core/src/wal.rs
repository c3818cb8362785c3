//! The write-ahead log: weft's embedded persistence.
//!
//! Every catalog change and every committed transaction is appended as one frame before the
//! commit is acknowledged. A log starts with the 8 bytes `WEFTLOG2`; a frame is
//! `length: u32 LE | payload CRC-32: u32 LE | header CRC-32: u32 LE | bincode payload`, the
//! header's own checksum covering its first 8 bytes, so a damaged length is never trusted.
//! With `sync` on, the append is followed by `fdatasync`, so a power loss loses nothing; with it
//! off, the frame still reaches the operating system before the commit returns, so killing the
//! process (kill -9) loses nothing.
//!
//! The log tells the truth about itself:
//! - An append or sync that fails cuts the file back to the last good frame and leaves the log
//!   refusing every later append until it is opened again: a rolled-back commit can never be
//!   written out by the next one, nor reappear after a restart.
//! - Opening cuts a *torn tail* (at most one partial frame at the end: a crash mid-append,
//!   never acknowledged) with a warning saying how many bytes, and refuses a *damaged* log
//!   (anything else) naming the offset, keeping the file as it is; [`recover`] rewrites it up to
//!   the damage after saying what is lost (`weft recover`).
//!
//! Logs written before this format (12-byte headers without their own checksum) are read with
//! their old rules and rewritten in this one when opened. [`Log::rewrite`] replaces the log by
//! a compact snapshot.

use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use weft_engine::{Change, ColumnType, RelationId, Row};

/// One logged event.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum Record {
    /// `CREATE TABLE`.
    CreateTable {
        /// The table's id.
        id: RelationId,
        /// Its name.
        name: String,
        /// Its columns.
        columns: Vec<(String, ColumnType)>,
        /// Its primary key's columns.
        primary_key: Option<Vec<usize>>,
    },
    /// `CREATE VIEW`, replayed by planning `sql` again.
    CreateView {
        /// The view's id.
        id: RelationId,
        /// Its name.
        name: String,
        /// Its SQL.
        sql: String,
    },
    /// `DROP TABLE` / `DROP VIEW`.
    Drop {
        /// The relation dropped.
        id: RelationId,
    },
    /// One committed transaction: rows inserted (`diff > 0`) and deleted (`diff < 0`).
    Commit {
        /// Each change: the table, the row, the change of its multiplicity.
        changes: Vec<(RelationId, Row, i64)>,
    },
    /// A receipt: the invocation's instruction and the receipt, both DAG-CBOR, and the proof of
    /// the node's signature over the receipt's CID (logs written before [`Record::Receipts`]).
    Receipt {
        /// The invocation's DAG-CBOR.
        invocation: Vec<u8>,
        /// The receipt's DAG-CBOR.
        receipt: Vec<u8>,
        /// The node's signature proof.
        proof: weft_ipvm::identity::Proof,
        /// When the invocation first ran (nanoseconds since the epoch).
        first_seen_ns: i64,
        /// The worker that ran it.
        worker: u32,
    },
    /// `CREATE FUNCTION`, with the module's bytes.
    CreateFunction {
        /// The function.
        definition: crate::catalog::FunctionDefinition,
    },
    /// `DROP FUNCTION`.
    DropFunction {
        /// The function.
        name: String,
    },
    /// `CREATE SINK`.
    CreateSink {
        /// The sink.
        definition: crate::connections::SinkDefinition,
    },
    /// `CREATE SOURCE`, with the columns the source was found to have.
    CreateSource {
        /// The source.
        definition: crate::connections::SourceDefinition,
    },
    /// `DROP SINK` / `DROP SOURCE`, or the drop of a reading view's query effects.
    DropEffectful {
        /// The sink, source or reading view.
        name: String,
    },
    /// A view that reads the world (`http_get`): its query effects.
    CreateReads {
        /// The reading view.
        definition: crate::reading_views::ReadsDefinition,
    },
    /// Receipts signed together: one signature over the Merkle root of their CIDs (logs written
    /// before [`Record::CompactReceipts`]).
    Receipts(weft_ipvm::receipts::LoggedBatch),
    /// Receipts signed together, the batch encoded with variable-length integers
    /// ([`weft_ipvm::receipts::LoggedBatch::encode`]): about 90 bytes per receipt instead of 130
    /// (logs written before [`Record::ReceiptRuns`]).
    CompactReceipts(Vec<u8>),
    /// Receipts signed together, as their runs without their CIDs (computed again when read),
    /// encoded with variable-length integers ([`weft_ipvm::receipts::LoggedRuns::encode`]): about
    /// 27 bytes per receipt.
    ReceiptRuns(Vec<u8>),
}

impl From<weft_ipvm::memo::SnapshotReceipts> for Record {
    fn from(receipts: weft_ipvm::memo::SnapshotReceipts) -> Record {
        match receipts {
            weft_ipvm::memo::SnapshotReceipts::Runs(runs) => Record::ReceiptRuns(runs),
            weft_ipvm::memo::SnapshotReceipts::Single { invocation, receipt, proof, first_seen_ns, worker } => {
                Record::Receipt { invocation, receipt, proof, first_seen_ns, worker }
            }
        }
    }
}

/// Errors of the log.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// Reading or writing the log file failed.
    #[error("write-ahead log {path}: {source}")]
    Io {
        /// The log file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A record could not be encoded, or a whole, checksummed frame did not decode.
    #[error("write-ahead log {path}: corrupt frame at byte {offset}: {message}")]
    Corrupt {
        /// The log file.
        path: PathBuf,
        /// Where the frame starts.
        offset: u64,
        /// What is wrong with it.
        message: String,
    },
    /// The log is damaged before its end: opening it would silently drop what follows.
    #[error("write-ahead log {path} is damaged at byte {offset} ({message}); `weft recover --data-dir DIR` keeps the {frames} frames before it and says what is lost")]
    Damaged {
        /// The log file.
        path: PathBuf,
        /// Where the damage starts.
        offset: u64,
        /// Whole frames before it.
        frames: u64,
        /// What is wrong.
        message: String,
    },
    /// An earlier append or sync failed; the log takes no more appends until it is reopened.
    #[error("write-ahead log {path}: an earlier write failed, so the log takes no more commits until the database is opened again")]
    Failed {
        /// The log file.
        path: PathBuf,
    },
}

/// An open, append-only log file of records of type `R` (the outbox uses it too).
pub struct Log<R> {
    path: PathBuf,
    file: File,
    sync: bool,
    frames: u64,
    bytes: u64,
    /// An append or sync failed: no more appends until reopened.
    failed: bool,
    #[cfg(test)]
    faults: faults::Faults,
    records: std::marker::PhantomData<fn(R)>,
}

/// The database's write-ahead log.
pub type Wal = Log<Record>;

/// The first bytes of a log in this format.
const MAGIC: &[u8; 8] = b"WEFTLOG2";

/// A frame's header: length, payload checksum, header checksum.
const HEADER_BYTES: usize = 12;

/// Mixed into the header checksum, so that a header of zeros is not a valid one.
const HEADER_SALT: u32 = 0x5745_4654;

fn header_checksum(first_eight: &[u8]) -> u32 {
    crc32fast::hash(first_eight) ^ HEADER_SALT
}

/// One record as a log frame: its header, then the bincode payload.
pub fn encode_frame<T: Serialize>(record: &T) -> Result<Vec<u8>, bincode::Error> {
    let length = bincode::serialized_size(record)?;
    let length = u32::try_from(length).map_err(|_| {
        Box::new(bincode::ErrorKind::Custom(format!("a record of {length} bytes is larger than a log frame (4 GiB)")))
    })?;
    let mut frame = vec![0u8; HEADER_BYTES];
    frame.reserve_exact(length as usize);
    bincode::serialize_into(&mut frame, record)?;
    let payload_checksum = crc32fast::hash(&frame[HEADER_BYTES..]);
    frame[..4].copy_from_slice(&length.to_le_bytes());
    frame[4..8].copy_from_slice(&payload_checksum.to_le_bytes());
    let header = header_checksum(&frame[..8]);
    frame[8..HEADER_BYTES].copy_from_slice(&header.to_le_bytes());
    Ok(frame)
}

/// Where reading a log stopped.
enum Ending {
    /// At the end of the file, after a whole frame (or at its start).
    Clean,
    /// At a torn final frame, which starts at the offset reached.
    Torn,
    /// At damage: the offset reached and what is wrong there.
    Damaged(String),
}

/// The frames of a log read from its bytes.
struct Scan {
    /// Each whole frame's payload.
    payloads: Vec<(u64, Vec<u8>)>,
    /// Where the last whole frame ends.
    offset: u64,
    ending: Ending,
    /// Written before [`MAGIC`]: to be rewritten in this format.
    legacy: bool,
}

/// Reads the frames of a log of `file_length` bytes.
fn scan(reader: &mut impl Read, file_length: u64) -> std::io::Result<Scan> {
    let mut magic = [0u8; MAGIC.len()];
    let read = read_full(reader, &mut magic)?;
    if read < MAGIC.len() && magic[..read] == MAGIC[..read] {
        // Empty, or a creation cut short.
        let ending = if read == 0 { Ending::Clean } else { Ending::Torn };
        return Ok(Scan { payloads: Vec::new(), offset: 0, ending, legacy: false });
    }
    if &magic != MAGIC {
        return legacy::scan(&magic[..read], reader, file_length);
    }
    let mut scan = Scan { payloads: Vec::new(), offset: MAGIC.len() as u64, ending: Ending::Clean, legacy: false };
    loop {
        let remaining = file_length - scan.offset;
        if remaining == 0 {
            return Ok(scan);
        }
        let mut header = [0u8; HEADER_BYTES];
        let read = read_full(reader, &mut header)?;
        if read < HEADER_BYTES {
            scan.ending = Ending::Torn;
            return Ok(scan);
        }
        let length = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as u64;
        let payload_checksum = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
        let expected = u32::from_le_bytes(header[8..].try_into().expect("4 bytes"));
        if header_checksum(&header[..8]) != expected {
            // A tail of zeros is a crash after the file grew and before its bytes were written.
            let zeros = header.iter().all(|byte| *byte == 0) && rest_is_zero(reader)?;
            scan.ending = if zeros { Ending::Torn } else { Ending::Damaged("frame header checksum mismatch".into()) };
            return Ok(scan);
        }
        if HEADER_BYTES as u64 + length > remaining {
            scan.ending = Ending::Torn;
            return Ok(scan);
        }
        let mut payload = vec![0u8; length as usize];
        read_full(reader, &mut payload)?;
        if crc32fast::hash(&payload) != payload_checksum {
            let last = HEADER_BYTES as u64 + length == remaining;
            scan.ending = if last { Ending::Torn } else { Ending::Damaged("frame payload checksum mismatch".into()) };
            return Ok(scan);
        }
        scan.payloads.push((scan.offset, payload));
        scan.offset += HEADER_BYTES as u64 + length;
    }
}

/// Whether every byte left in `reader` is zero.
fn rest_is_zero(reader: &mut impl Read) -> std::io::Result<bool> {
    let mut buffer = [0u8; 8192];
    loop {
        match reader.read(&mut buffer)? {
            0 => return Ok(true),
            read if buffer[..read].iter().all(|byte| *byte == 0) => {}
            _ => return Ok(false),
        }
    }
}

/// The payloads of the whole frames in a log's `bytes`, and how the log ends (`"clean"`,
/// `"torn"` or `"damaged"`): the reading [`Log::open`] does, for tools and the fuzz harness.
pub fn read_frames(bytes: &[u8]) -> (Vec<Vec<u8>>, &'static str) {
    match scan(&mut std::io::Cursor::new(bytes), bytes.len() as u64) {
        Ok(scan) => {
            let ending = match scan.ending {
                Ending::Clean => "clean",
                Ending::Torn => "torn",
                Ending::Damaged(_) => "damaged",
            };
            (scan.payloads.into_iter().map(|(_, payload)| payload).collect(), ending)
        }
        Err(_) => (Vec::new(), "damaged"),
    }
}

/// What [`recover`] kept and cut.
#[derive(Debug, PartialEq)]
pub struct Recovery {
    /// Whole frames kept.
    pub frames: u64,
    /// Bytes kept.
    pub kept_bytes: u64,
    /// Bytes cut from the damage on (0: the log was not damaged).
    pub lost_bytes: u64,
    /// Where the damage starts, and what it is.
    pub damage: Option<(u64, String)>,
    /// The copy of the damaged file, kept beside it.
    pub copy: Option<PathBuf>,
}

/// Rewrites the log at `path` up to its first damage, keeping a copy of the damaged file as
/// `<path>.damaged`. A log without damage is left as it is (a torn tail is cut on open).
pub fn recover(path: &Path) -> Result<Recovery, WalError> {
    let io = |source| WalError::Io { path: path.to_path_buf(), source };
    let file = File::open(path).map_err(io)?;
    let file_length = file.metadata().map_err(io)?.len();
    let scan = scan(&mut BufReader::new(&file), file_length).map_err(io)?;
    drop(file);
    let frames = scan.payloads.len() as u64;
    let Ending::Damaged(message) = scan.ending else {
        return Ok(Recovery { frames, kept_bytes: file_length, lost_bytes: 0, damage: None, copy: None });
    };
    let copy = path.with_extension("damaged");
    std::fs::copy(path, &copy).map_err(io)?;
    let file = OpenOptions::new().write(true).open(path).map_err(io)?;
    file.set_len(scan.offset).map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(Recovery {
        frames,
        kept_bytes: scan.offset,
        lost_bytes: file_length - scan.offset,
        damage: Some((scan.offset, message)),
        copy: Some(copy),
    })
}

impl<R: Serialize + serde::de::DeserializeOwned> Log<R> {
    /// Opens (creating if needed) the log at `path`, returning it with every intact record.
    pub fn open(path: &Path, sync: bool) -> Result<(Log<R>, Vec<R>), WalError> {
        let io = |source| WalError::Io { path: path.to_path_buf(), source };
        let file = OpenOptions::new().read(true).append(true).create(true).open(path).map_err(io)?;
        let file_length = file.metadata().map_err(io)?.len();
        let scan = scan(&mut BufReader::new(&file), file_length).map_err(io)?;
        let frames = scan.payloads.len() as u64;
        if let Ending::Damaged(message) = scan.ending {
            return Err(WalError::Damaged { path: path.to_path_buf(), offset: scan.offset, frames, message });
        }
        let mut records = Vec::with_capacity(scan.payloads.len());
        for (offset, payload) in &scan.payloads {
            let record = bincode::deserialize(payload).map_err(|error| WalError::Corrupt {
                path: path.to_path_buf(),
                offset: *offset,
                message: error.to_string(),
            })?;
            records.push(record);
        }
        if file_length > scan.offset {
            // A torn final frame from a crash mid-append: it was never acknowledged.
            tracing::warn!(
                log = %path.display(),
                torn_bytes = file_length - scan.offset,
                at_byte = scan.offset,
                "cut a torn final frame from the write-ahead log (a crash mid-append; it was never acknowledged)"
            );
            file.set_len(scan.offset).map_err(io)?;
        }
        let mut log = Log {
            path: path.to_path_buf(),
            file,
            sync,
            frames,
            bytes: scan.offset,
            failed: false,
            #[cfg(test)]
            faults: faults::Faults::default(),
            records: std::marker::PhantomData,
        };
        if scan.legacy {
            log.rewrite_payloads(scan.payloads.iter().map(|(_, payload)| payload.as_slice()))?;
        } else if scan.offset == 0 {
            log.write_bytes(MAGIC)?;
            log.sync_written()?;
            log.bytes = MAGIC.len() as u64;
        }
        Ok((log, records))
    }

    fn io(&self, source: std::io::Error) -> WalError {
        WalError::Io { path: self.path.clone(), source }
    }

    /// Appends records and makes them durable (see the module docs for what that means).
    pub fn append(&mut self, records: &[R]) -> Result<(), WalError> {
        self.append_serialized(records)
    }

    fn append_serialized<T: Serialize>(&mut self, records: &[T]) -> Result<(), WalError> {
        let mut frames = Vec::with_capacity(records.len());
        for record in records {
            frames.push(encode_frame(record).map_err(|error| WalError::Corrupt {
                path: self.path.clone(),
                offset: self.bytes,
                message: error.to_string(),
            })?);
        }
        self.append_frames(&frames)
    }

    /// Appends frames made by [`encode_frame`] (on another thread, say) as they are. If any write
    /// or the sync fails, the file is cut back to where it was and the log takes no more appends.
    pub fn append_frames(&mut self, frames: &[Vec<u8>]) -> Result<(), WalError> {
        if self.failed {
            return Err(WalError::Failed { path: self.path.clone() });
        }
        let start = (self.bytes, self.frames);
        let written = (|| {
            // Small frames go out in one write; large ones as they are.
            let mut pending = Vec::new();
            for frame in frames {
                if frame.len() >= 1 << 16 {
                    self.write_bytes(&pending)?;
                    pending.clear();
                    self.write_bytes(frame)?;
                } else {
                    pending.extend_from_slice(frame);
                }
                self.bytes += frame.len() as u64;
                self.frames += 1;
            }
            self.write_bytes(&pending)?;
            self.sync_written()
        })();
        if let Err(error) = written {
            self.failed = true;
            (self.bytes, self.frames) = start;
            // Whatever reached the file of this append is cut off: the next open must not see
            // it. If even that fails, the log still refuses appends, and a restart reads what
            // the file says.
            let _ = self.file.set_len(self.bytes).and_then(|()| self.file.sync_data());
            return Err(error);
        }
        Ok(())
    }

    fn write_bytes(&mut self, bytes: &[u8]) -> Result<(), WalError> {
        if bytes.is_empty() {
            return Ok(());
        }
        #[cfg(test)]
        if let Some(torn) = self.faults.write() {
            let kept = torn.min(bytes.len());
            let _ = self.file.write_all(&bytes[..kept]);
            return Err(self.io(std::io::Error::other("injected write failure")));
        }
        self.file.write_all(bytes).map_err(|error| self.io(error))
    }

    /// Makes what was written durable (with `sync`; it reached the operating system already).
    fn sync_written(&mut self) -> Result<(), WalError> {
        if self.sync {
            #[cfg(test)]
            if self.faults.sync() {
                return Err(self.io(std::io::Error::other("injected sync failure")));
            }
            self.file.sync_data().map_err(|error| self.io(error))?;
        }
        Ok(())
    }

    /// Makes the next write fail after `torn` of its bytes reached the file (tests).
    #[cfg(test)]
    pub(crate) fn fail_next_write(&mut self, torn: usize) {
        self.faults.write_after = Some((0, torn));
    }

    /// Makes the next sync fail (tests; only a log opened with `sync` syncs).
    #[cfg(test)]
    pub(crate) fn fail_next_sync(&mut self) {
        self.faults.sync_after = Some(0);
    }

    /// Number of frames in the log.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Size of the log in bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Atomically replaces the whole log by `records` (write a new file, sync, rename).
    pub fn rewrite(&mut self, records: &[R]) -> Result<(), WalError> {
        let mut frames = Vec::with_capacity(records.len());
        for record in records {
            frames.push(encode_frame(record).map_err(|error| WalError::Corrupt {
                path: self.path.clone(),
                offset: 0,
                message: error.to_string(),
            })?);
        }
        self.replace_with(&frames)
    }

    /// Rewrites a legacy log's payloads in this format.
    fn rewrite_payloads<'a>(&mut self, payloads: impl Iterator<Item = &'a [u8]>) -> Result<(), WalError> {
        let frames: Vec<Vec<u8>> = payloads
            .map(|payload| {
                let mut frame = Vec::with_capacity(HEADER_BYTES + payload.len());
                frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
                frame.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
                frame.extend_from_slice(&header_checksum(&frame[..8]).to_le_bytes());
                frame.extend_from_slice(payload);
                frame
            })
            .collect();
        self.replace_with(&frames)
    }

    /// Writes `frames` to a new file, syncs it and renames it over the log, then reopens.
    fn replace_with(&mut self, frames: &[Vec<u8>]) -> Result<(), WalError> {
        let temporary = self.path.with_extension("rewrite");
        {
            let io = |source| WalError::Io { path: temporary.clone(), source };
            let mut fresh = File::create(&temporary).map_err(io)?;
            fresh.write_all(MAGIC).map_err(io)?;
            for frame in frames {
                fresh.write_all(frame).map_err(io)?;
            }
            fresh.sync_all().map_err(io)?;
        }
        std::fs::rename(&temporary, &self.path).map_err(|error| self.io(error))?;
        if let Some(directory) = self.path.parent() {
            if let Ok(directory) = File::open(directory) {
                let _ = directory.sync_all();
            }
        }
        let (reopened, _) = Log::<R>::open(&self.path, self.sync)?;
        *self = reopened;
        Ok(())
    }
}

/// Logs written before [`MAGIC`]: `length: u32 LE | checksum: u64 LE | payload`, the checksum a
/// CRC-32 tagged in its high half, or FNV-1a in older logs still. Their headers have no
/// checksum of their own, so a bad frame before the end is damage and a bad last one torn.
mod legacy {
    use super::{read_full, Ending, Scan};
    use std::io::Read;

    const HEADER_BYTES: usize = 12;
    const CRC_MARKER: u64 = 0x5745_4654 << 32;

    fn fnv(bytes: &[u8]) -> u64 {
        bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(0x100_0000_01b3))
    }

    pub(super) fn checksum_matches(bytes: &[u8], expected: u64) -> bool {
        (expected >> 32 == CRC_MARKER >> 32 && (CRC_MARKER | u64::from(crc32fast::hash(bytes))) == expected)
            || fnv(bytes) == expected
    }

    fn not_a_log() -> Ending {
        Ending::Damaged("the file starts with neither a weft log header nor a whole frame".into())
    }

    /// Reads a legacy log whose first bytes (`first`, up to 8) were read already.
    pub(super) fn scan(first: &[u8], reader: &mut impl Read, file_length: u64) -> std::io::Result<Scan> {
        let mut reader = first.chain(reader);
        let mut scan = Scan { payloads: Vec::new(), offset: 0, ending: Ending::Clean, legacy: true };
        loop {
            let mut header = [0u8; HEADER_BYTES];
            match read_full(&mut reader, &mut header)? {
                0 => return Ok(scan),
                read if read < HEADER_BYTES => {
                    scan.ending = Ending::Torn;
                    return Ok(scan);
                }
                _ => {}
            }
            let length = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as u64;
            let expected = u64::from_le_bytes(header[4..].try_into().expect("8 bytes"));
            // A file that is not in this format is read as a legacy log only if its first frame
            // is whole and checks out: a damaged header of a current log is damage.
            let first = scan.payloads.is_empty();
            if scan.offset + HEADER_BYTES as u64 + length > file_length {
                scan.ending = if first { not_a_log() } else { Ending::Torn };
                return Ok(scan);
            }
            let mut payload = vec![0u8; length as usize];
            read_full(&mut reader, &mut payload)?;
            if !checksum_matches(&payload, expected) {
                let last = scan.offset + HEADER_BYTES as u64 + length == file_length;
                scan.ending = if first {
                    not_a_log()
                } else if last {
                    Ending::Torn
                } else {
                    Ending::Damaged("checksum mismatch before the end of the log".into())
                };
                return Ok(scan);
            }
            scan.payloads.push((scan.offset, payload));
            scan.offset += HEADER_BYTES as u64 + length;
        }
    }
}

/// Failures injected into a log's writes and syncs, for the tests of what a failed append leaves.
#[cfg(test)]
mod faults {
    /// Which write or sync fails next.
    #[derive(Default)]
    pub(super) struct Faults {
        /// Fail the write after this many more succeed, writing only this many of its bytes.
        pub(super) write_after: Option<(u32, usize)>,
        /// Fail the sync after this many more succeed.
        pub(super) sync_after: Option<u32>,
    }

    impl Faults {
        /// Whether this write fails, and how many of its bytes reach the file if so.
        pub(super) fn write(&mut self) -> Option<usize> {
            let (after, torn) = self.write_after.as_mut()?;
            if *after == 0 {
                let torn = *torn;
                self.write_after = None;
                return Some(torn);
            }
            *after -= 1;
            None
        }

        /// Whether this sync fails.
        pub(super) fn sync(&mut self) -> bool {
            match self.sync_after.as_mut() {
                Some(0) => {
                    self.sync_after = None;
                    true
                }
                Some(after) => {
                    *after -= 1;
                    false
                }
                None => false,
            }
        }
    }
}

impl Wal {
    /// Appends one [`Record::Commit`] of `changes` without copying them into a record first.
    pub fn append_commit(&mut self, changes: &[Change]) -> Result<(), WalError> {
        self.append_serialized(&[CommitRef(changes)])
    }
}

/// The frame [`Wal::append_commit`] appends for `changes`, to encode ahead (on another thread)
/// and append with [`Wal::append_frames`].
pub fn commit_frame(changes: &[Change]) -> Result<Vec<u8>, bincode::Error> {
    encode_frame(&CommitRef(changes))
}

/// Serializes exactly as `Record::Commit { changes }` would, borrowing the changes.
struct CommitRef<'a>(&'a [Change]);

impl Serialize for CommitRef<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeSeq, SerializeStructVariant};
        struct Changes<'a>(&'a [Change]);
        impl Serialize for Changes<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut sequence = serializer.serialize_seq(Some(self.0.len()))?;
                for change in self.0 {
                    sequence.serialize_element(&(change.table, &change.row, change.diff as i64))?;
                }
                sequence.end()
            }
        }
        // Variant 3 is `Record::Commit`.
        let mut variant = serializer.serialize_struct_variant("Record", 3, "Commit", 1)?;
        variant.serialize_field("changes", &Changes(self.0))?;
        variant.end()
    }
}

fn read_full(reader: &mut impl Read, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_engine::Value;

    #[test]
    fn a_commit_frame_encoded_ahead_is_the_frame_of_its_commit_record() {
        let changes = vec![
            Change { table: 3, row: vec![Value::Int(1), Value::Text("a".into())], diff: 1 },
            Change { table: 3, row: vec![Value::Int(2), Value::Null], diff: -1 },
        ];
        let record = Record::Commit {
            changes: changes.iter().map(|change| (change.table, change.row.clone(), change.diff as i64)).collect(),
        };
        assert_eq!(commit_frame(&changes).unwrap(), encode_frame(&record).unwrap());
    }

    fn directory(name: &str) -> PathBuf {
        let directory = std::env::temp_dir().join(format!("weft-wal-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&directory);
        std::fs::create_dir_all(&directory).unwrap();
        directory
    }

    fn commit(number: i64) -> Record {
        Record::Commit { changes: vec![(1, vec![Value::Int(number), Value::Text("x".into())], 1)] }
    }

    #[test]
    fn torn_tail_is_dropped_and_log_stays_appendable() {
        let directory = directory("torn");
        let path = directory.join("wal");
        let commit = commit(1);
        {
            let (mut wal, records) = Wal::open(&path, false).unwrap();
            assert!(records.is_empty());
            wal.append(&[commit.clone(), commit.clone()]).unwrap();
        }
        let length = std::fs::metadata(&path).unwrap().len();
        OpenOptions::new().write(true).open(&path).unwrap().set_len(length - 3).unwrap();
        let (mut wal, records) = Wal::open(&path, false).unwrap();
        assert_eq!(records, vec![commit.clone()]);
        let borrowed = [Change { table: 1, row: vec![Value::Int(1), Value::Text("x".into())], diff: 1 }];
        assert_eq!(bincode::serialize(&CommitRef(&borrowed)).unwrap(), bincode::serialize(&commit).unwrap());
        wal.append(std::slice::from_ref(&commit)).unwrap();
        drop(wal);
        assert_eq!(Wal::open(&path, false).unwrap().1.len(), 2);
        // Frames encoded elsewhere append exactly as records do.
        let (mut wal, _) = Wal::open(&path, false).unwrap();
        wal.append_frames(&[encode_frame(&commit).unwrap()]).unwrap();
        assert_eq!(wal.frames(), 3);
        drop(wal);
        assert_eq!(Wal::open(&path, false).unwrap().1, vec![commit.clone(), commit.clone(), commit.clone()]);
        let (mut wal, _) = Wal::open(&path, false).unwrap();
        wal.rewrite(std::slice::from_ref(&commit)).unwrap();
        assert_eq!(wal.frames(), 1);
        assert_eq!(Wal::open(&path, false).unwrap().1, vec![commit.clone()]);
        // A tail of zeros (the file grew, its bytes never written) is torn too.
        let length = std::fs::metadata(&path).unwrap().len();
        OpenOptions::new().write(true).open(&path).unwrap().set_len(length + 100).unwrap();
        assert_eq!(Wal::open(&path, false).unwrap().1, vec![commit.clone()]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), length);
        std::fs::remove_dir_all(&directory).unwrap();
    }

    #[test]
    fn legacy_logs_are_read_and_rewritten_in_the_current_format() {
        let directory = directory("legacy");
        let path = directory.join("wal");
        let commit = commit(1);
        // A frame checksummed with FNV-1a, then one with a tagged CRC-32 (logs from before).
        let payload = bincode::serialize(&commit).unwrap();
        let fnv = payload
            .iter()
            .fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(0x100_0000_01b3));
        let crc = (0x5745_4654u64 << 32) | u64::from(crc32fast::hash(&payload));
        let mut bytes = Vec::new();
        for checksum in [fnv, crc] {
            bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&checksum.to_le_bytes());
            bytes.extend_from_slice(&payload);
        }
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(Wal::open(&path, false).unwrap().1, vec![commit.clone(), commit.clone()]);
        assert!(std::fs::read(&path).unwrap().starts_with(MAGIC), "rewritten in the current format");
        assert_eq!(Wal::open(&path, false).unwrap().1, vec![commit.clone(), commit.clone()]);
        // A legacy log whose last frame no longer checks out had a torn tail.
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(Wal::open(&path, false).unwrap().1, vec![commit.clone()]);
        // A file that is neither is refused, not read as empty.
        std::fs::write(&path, b"not a log at all, but more than a header").unwrap();
        assert!(matches!(Wal::open(&path, false), Err(WalError::Damaged { offset: 0, .. })));
        std::fs::remove_dir_all(&directory).unwrap();
    }

    #[test]
    fn a_failed_append_is_cut_off_and_the_log_refuses_more_until_reopened() {
        for (case, sync) in [("write", false), ("torn-write", false), ("sync", true)] {
            let directory = directory(&format!("failed-{case}"));
            let path = directory.join("wal");
            let (mut wal, _) = Wal::open(&path, sync).unwrap();
            wal.append(&[commit(1)]).unwrap();
            let before = std::fs::metadata(&path).unwrap().len();
            match case {
                "write" => wal.faults.write_after = Some((0, 0)),
                "torn-write" => wal.faults.write_after = Some((0, 7)),
                _ => wal.faults.sync_after = Some(0),
            }
            // The rolled-back commit's frames are not left behind for the next one to carry.
            assert!(matches!(wal.append(&[commit(2), commit(3)]), Err(WalError::Io { .. })), "{case}");
            assert_eq!(std::fs::metadata(&path).unwrap().len(), before, "{case}: cut back");
            assert!(matches!(wal.append(&[commit(4)]), Err(WalError::Failed { .. })), "{case}");
            drop(wal);
            let (mut wal, records) = Wal::open(&path, sync).unwrap();
            assert_eq!(records, vec![commit(1)], "{case}: the failed commit never comes back");
            wal.append(&[commit(5)]).unwrap();
            drop(wal);
            assert_eq!(Wal::open(&path, sync).unwrap().1, vec![commit(1), commit(5)], "{case}");
            std::fs::remove_dir_all(&directory).unwrap();
        }
    }

    #[test]
    fn damage_before_the_end_is_refused_and_recovered_up_to_the_damage() {
        let seed = std::env::var("WEFT_TEST_SEED").ok().and_then(|seed| seed.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
        });
        println!("damage test seed {seed} (WEFT_TEST_SEED to repeat)");
        let mut state = seed | 1;
        let mut random = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let directory = directory("damage");
        let path = directory.join("wal");
        let commits: Vec<Record> = (0..300).map(commit).collect();
        {
            let (mut wal, _) = Wal::open(&path, false).unwrap();
            for record in &commits {
                wal.append(std::slice::from_ref(record)).unwrap();
            }
        }
        let pristine = std::fs::read(&path).unwrap();
        let limit = pristine.len() * 85 / 100;
        for round in 0..40 {
            let offset = (random() % limit as u64) as usize;
            let mut damaged = pristine.clone();
            damaged[offset] ^= 1 << (random() % 8);
            std::fs::write(&path, &damaged).unwrap();
            match Wal::open(&path, false) {
                Err(WalError::Damaged { offset: at, frames, .. }) => {
                    assert!(at as usize <= offset, "seed {seed} round {round}: damage at {offset} found at {at}");
                    let recovery = recover(&path).unwrap();
                    assert_eq!(recovery.frames, frames);
                    assert_eq!(recovery.kept_bytes + recovery.lost_bytes, pristine.len() as u64);
                    assert_eq!(std::fs::read(recovery.copy.unwrap()).unwrap(), damaged, "the damaged file is kept");
                    let (_, records) = Wal::open(&path, false).unwrap();
                    assert_eq!(records, commits[..frames as usize], "seed {seed} round {round}");
                }
                Ok((_, records)) => {
                    panic!("seed {seed} round {round}: a flip at byte {offset} opened with {} records", records.len())
                }
                Err(error) => panic!("seed {seed} round {round}: {error}"),
            }
        }
        std::fs::remove_dir_all(&directory).unwrap();
    }
}
