//! The write-ahead log: weft's embedded persistence.
//!
//! Every catalog change and every committed transaction is appended as one frame
//! (`length: u32 LE | checksum: u64 LE | bincode payload`; the checksum is a CRC-32 tagged in
//! its high half, or FNV-1a in logs from before) before the commit is acknowledged.
//! With `sync` on, the append is followed by `fdatasync`, so a power loss loses nothing; with it
//! off, the frame still reaches the operating system before the commit returns, so killing the
//! process (kill -9) loses nothing. Opening the log replays every whole frame; a torn final frame
//! (a crash mid-append) is cut off. [`Wal::rewrite`] replaces the log by a compact snapshot.

use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use weft_engine::{Change, ColumnType, RelationId, Row};

/// One logged event.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum Record {
    /// `CREATE TABLE`.
    CreateTable { id: RelationId, name: String, columns: Vec<(String, ColumnType)>, primary_key: Option<Vec<usize>> },
    /// `CREATE VIEW`, replayed by planning `sql` again.
    CreateView { id: RelationId, name: String, sql: String },
    /// `DROP TABLE` / `DROP VIEW`.
    Drop { id: RelationId },
    /// One committed transaction: rows inserted (`diff > 0`) and deleted (`diff < 0`).
    Commit { changes: Vec<(RelationId, Row, i64)> },
    /// A receipt: the invocation's instruction and the receipt, both DAG-CBOR, and the proof of
    /// the node's signature over the receipt's CID (logs written before [`Record::Receipts`]).
    Receipt { invocation: Vec<u8>, receipt: Vec<u8>, proof: crate::identity::Proof, first_seen_ns: i64, worker: u32 },
    /// `CREATE FUNCTION`, with the module's bytes.
    CreateFunction { definition: crate::functions::FunctionDefinition },
    /// `DROP FUNCTION`.
    DropFunction { name: String },
    /// `CREATE SINK`.
    CreateSink { definition: crate::effects::SinkDefinition },
    /// `CREATE SOURCE`, with the columns the source was found to have.
    CreateSource { definition: crate::effects::SourceDefinition },
    /// `DROP SINK` / `DROP SOURCE`, or the drop of a reading view's query effects.
    DropEffectful { name: String },
    /// A view that reads the world (`http_get`): its query effects.
    CreateReads { definition: crate::reads::ReadsDefinition },
    /// Receipts signed together: one signature over the Merkle root of their CIDs (logs written
    /// before [`Record::CompactReceipts`]).
    Receipts(crate::functions::LoggedBatch),
    /// Receipts signed together, the batch encoded with variable-length integers
    /// ([`crate::functions::LoggedBatch::encode`]): about 90 bytes per receipt instead of 130
    /// (logs written before [`Record::ReceiptRuns`]).
    CompactReceipts(Vec<u8>),
    /// Receipts signed together, as their runs without their CIDs (computed again when read),
    /// encoded with variable-length integers ([`crate::functions::LoggedRuns::encode`]): about
    /// 27 bytes per receipt.
    ReceiptRuns(Vec<u8>),
}

/// Errors of the log.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// Reading or writing the log file failed.
    #[error("write-ahead log {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// A frame could not be encoded or decoded.
    #[error("write-ahead log {path}: corrupt frame at byte {offset}: {message}")]
    Corrupt { path: PathBuf, offset: u64, message: String },
}

/// An open, append-only log file of records of type `R` (the outbox uses it too).
pub struct Log<R> {
    path: PathBuf,
    file: BufWriter<File>,
    sync: bool,
    frames: u64,
    bytes: u64,
    records: std::marker::PhantomData<fn(R)>,
}

/// The database's write-ahead log.
pub type Wal = Log<Record>;

const HEADER_BYTES: usize = 12;

/// The high half of a frame's checksum field when the low half is a CRC-32.
const CRC_MARKER: u64 = 0x5745_4654 << 32;

/// A frame's checksum: CRC-32 (hardware-accelerated) tagged with [`CRC_MARKER`]. It detects torn
/// or garbled frames; it is not an integrity MAC.
fn checksum(bytes: &[u8]) -> u64 {
    CRC_MARKER | u64::from(crc32fast::hash(bytes))
}

/// One record as a log frame: the payload's length and checksum, then the bincode payload.
pub fn encode_frame<T: Serialize>(record: &T) -> Result<Vec<u8>, bincode::Error> {
    let length = bincode::serialized_size(record)? as usize;
    let mut frame = vec![0u8; HEADER_BYTES];
    frame.reserve_exact(length);
    bincode::serialize_into(&mut frame, record)?;
    let payload = &frame[HEADER_BYTES..];
    let header = ((payload.len() as u32).to_le_bytes(), checksum(payload).to_le_bytes());
    frame[..4].copy_from_slice(&header.0);
    frame[4..HEADER_BYTES].copy_from_slice(&header.1);
    Ok(frame)
}

/// The checksum of logs written before CRC-32: FNV-1a, 64 bits.
fn legacy_checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(0x100_0000_01b3))
}

/// Whether `expected` is the checksum of `bytes`: a tagged CRC-32, or the FNV-1a of logs
/// written before, which stay readable.
fn checksum_matches(bytes: &[u8], expected: u64) -> bool {
    (expected >> 32 == CRC_MARKER >> 32 && checksum(bytes) == expected) || legacy_checksum(bytes) == expected
}

impl<R: Serialize + serde::de::DeserializeOwned> Log<R> {
    /// Opens (creating if needed) the log at `path`, returning it with every intact record.
    pub fn open(path: &Path, sync: bool) -> Result<(Log<R>, Vec<R>), WalError> {
        let io = |source| WalError::Io { path: path.to_path_buf(), source };
        let file = OpenOptions::new().read(true).append(true).create(true).open(path).map_err(io)?;
        let file_length = file.metadata().map_err(io)?.len();
        let mut reader = BufReader::new(&file);
        let mut records = Vec::new();
        let mut offset: u64 = 0;
        loop {
            let mut header = [0u8; HEADER_BYTES];
            match read_full(&mut reader, &mut header).map_err(io)? {
                0 => break,
                n if n < HEADER_BYTES => break,
                _ => {}
            }
            let length = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
            let expected = u64::from_le_bytes(header[4..].try_into().expect("8 bytes"));
            let mut payload = vec![0u8; length];
            if read_full(&mut reader, &mut payload).map_err(io)? < length {
                break;
            }
            if !checksum_matches(&payload, expected) {
                if offset + (HEADER_BYTES + length) as u64 == file_length {
                    break;
                }
                // A bad frame with frames after it is damage, not a torn append: refuse to
                // guess, and keep the file as it is.
                return Err(WalError::Corrupt {
                    path: path.to_path_buf(),
                    offset,
                    message: "checksum mismatch before the end of the log".into(),
                });
            }
            let record = bincode::deserialize(&payload).map_err(|error| WalError::Corrupt {
                path: path.to_path_buf(),
                offset,
                message: error.to_string(),
            })?;
            records.push(record);
            offset += (HEADER_BYTES + length) as u64;
        }
        drop(reader);
        if file_length > offset {
            // A torn final frame from a crash mid-append: it was never acknowledged.
            file.set_len(offset).map_err(io)?;
        }
        let frames = records.len() as u64;
        let file = BufWriter::new(file);
        let log =
            Log { path: path.to_path_buf(), file, sync, frames, bytes: offset, records: std::marker::PhantomData };
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
        for record in records {
            let frame = encode_frame(record).map_err(|error| WalError::Corrupt {
                path: self.path.clone(),
                offset: self.bytes,
                message: error.to_string(),
            })?;
            self.write_frame(&frame)?;
        }
        self.sync_written()
    }

    /// Appends frames made by [`encode_frame`] (on another thread, say) as they are.
    pub fn append_frames(&mut self, frames: &[Vec<u8>]) -> Result<(), WalError> {
        for frame in frames {
            self.write_frame(frame)?;
        }
        self.sync_written()
    }

    fn write_frame(&mut self, frame: &[u8]) -> Result<(), WalError> {
        self.file.write_all(frame).map_err(|error| self.io(error))?;
        self.bytes += frame.len() as u64;
        self.frames += 1;
        Ok(())
    }

    /// Hands what was written to the operating system (and the disk, with `sync`).
    fn sync_written(&mut self) -> Result<(), WalError> {
        self.file.flush().map_err(|error| self.io(error))?;
        if self.sync {
            self.file.get_ref().sync_data().map_err(|error| self.io(error))?;
        }
        Ok(())
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
        let temporary = self.path.with_extension("rewrite");
        {
            let (mut fresh, _) = Log::<R>::open(&temporary, true)?;
            fresh.file.get_ref().set_len(0).map_err(|error| fresh.io(error))?;
            fresh.bytes = 0;
            fresh.frames = 0;
            fresh.append(records)?;
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

    #[test]
    fn torn_tail_is_dropped_and_log_stays_appendable() {
        let directory = std::env::temp_dir().join(format!("weft-wal-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let path = directory.join("wal");
        let _ = std::fs::remove_file(&path);
        let commit = Record::Commit { changes: vec![(1, vec![Value::Int(1), Value::Text("x".into())], 1)] };
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
        // A frame checksummed with FNV-1a (logs written before CRC-32) still reads; a frame whose
        // payload no longer matches either checksum is a torn tail.
        let payload = bincode::serialize(&commit).unwrap();
        let fnv = payload
            .iter()
            .fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(0x100_0000_01b3));
        let mut frame = (payload.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(&fnv.to_le_bytes());
        frame.extend_from_slice(&payload);
        std::fs::write(&path, &frame).unwrap();
        assert_eq!(Wal::open(&path, false).unwrap().1, vec![commit.clone()]);
        let last = frame.len() - 1;
        frame[last] ^= 0xff;
        std::fs::write(&path, &frame).unwrap();
        assert!(Wal::open(&path, false).unwrap().1.is_empty());
        assert!(checksum_matches(b"frame", checksum(b"frame")) && !checksum_matches(b"frame", checksum(b"other")));
        std::fs::remove_dir_all(&directory).unwrap();
    }
}
