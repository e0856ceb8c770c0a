//! Records kept on local disk instead of in memory: an append-only temporary file (removed
//! when dropped), read back by offset. Lambda's ephemeral storage holds what memory should
//! not (512 MB by default, up to 10 GB).

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use tempfile::TempPath;

/// Where one record lies in a spill file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Span {
    pub offset: u64,
    pub len: u32,
}

pub struct Spill {
    writer: BufWriter<File>,
    len: u64,
    /// Named, so a checkpoint can stream it to the state store; removed when dropped.
    path: TempPath,
}

impl Spill {
    /// An empty spill file in the system's temporary directory (`TMPDIR`, `/tmp` on Lambda).
    pub fn new() -> io::Result<Self> {
        let (file, path) = tempfile::NamedTempFile::new()?.into_parts();
        Ok(Self {
            writer: BufWriter::with_capacity(1 << 20, file),
            len: 0,
            path,
        })
    }

    /// A file to fill from elsewhere (a checkpoint's copy), then `adopt`.
    pub fn blank_path() -> io::Result<TempPath> {
        Ok(tempfile::NamedTempFile::new()?.into_temp_path())
    }

    /// The spill file at `path`, its first `len` bytes kept; appends go after them.
    pub fn adopt(path: TempPath, len: u64) -> io::Result<Self> {
        let mut file = OpenOptions::new().read(true).write(true).open(&path)?;
        if file.metadata()?.len() < len {
            return Err(io::Error::other("the spill file is shorter than its records"));
        }
        file.set_len(len)?;
        file.seek(SeekFrom::Start(len))?;
        Ok(Self {
            writer: BufWriter::with_capacity(1 << 20, file),
            len,
            path,
        })
    }

    /// Where the file is, everything written so far flushed to it.
    pub fn path(&mut self) -> io::Result<&Path> {
        self.writer.flush()?;
        Ok(&self.path)
    }

    pub fn append(&mut self, record: &[u8]) -> io::Result<Span> {
        let len = u32::try_from(record.len()).map_err(|_| io::Error::other("record over 4 GiB"))?;
        self.writer.write_all(record)?;
        let span = Span {
            offset: self.len,
            len,
        };
        self.len += u64::from(len);
        Ok(span)
    }

    /// Bytes written so far (what the spill costs on disk).
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn read(&mut self, span: Span) -> io::Result<Vec<u8>> {
        self.writer.flush()?;
        let mut buf = vec![0; span.len as usize];
        self.writer.get_ref().read_exact_at(&mut buf, span.offset)?;
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn records_come_back_by_span_and_whole() {
        let mut spill = Spill::new().unwrap();
        let a = spill.append(b"first").unwrap();
        let b = spill.append(b"second record").unwrap();
        assert_eq!(spill.read(b).unwrap(), b"second record");
        assert_eq!(spill.read(a).unwrap(), b"first");
        // A copy (a checkpoint's), with bytes after the records it knows: cut off.
        let copy_path = Spill::blank_path().unwrap();
        std::fs::copy(spill.path().unwrap(), &copy_path).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&copy_path)
            .unwrap()
            .write_all(b"torn")
            .unwrap();
        let mut copy = Spill::adopt(copy_path, 18).unwrap();
        assert_eq!(copy.read(b).unwrap(), b"second record");
        let c = copy.append(b"third").unwrap();
        assert_eq!((c.offset, copy.len()), (18, 23));
        assert_eq!(copy.read(c).unwrap(), b"third");
        let mut all = String::new();
        File::open(copy.path().unwrap())
            .unwrap()
            .read_to_string(&mut all)
            .unwrap();
        assert_eq!(all, "firstsecond recordthird");
    }
}
