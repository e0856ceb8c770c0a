//! Records kept on local disk instead of in memory: an append-only temporary file (removed
//! when dropped), read back by offset. Lambda's ephemeral storage holds what memory should
//! not (512 MB by default, up to 10 GB).

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;

/// Where one record lies in a spill file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Span {
    pub offset: u64,
    pub len: u32,
}

pub struct Spill {
    writer: BufWriter<File>,
    len: u64,
}

impl Spill {
    /// An empty spill file in the system's temporary directory (`TMPDIR`, `/tmp` on Lambda).
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            writer: BufWriter::with_capacity(1 << 20, tempfile::tempfile()?),
            len: 0,
        })
    }

    /// A spill file holding what `source` yields (a checkpoint's copy).
    pub fn from_reader(mut source: impl Read) -> io::Result<Self> {
        let mut spill = Self::new()?;
        spill.len = io::copy(&mut source, &mut spill.writer)?;
        Ok(spill)
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

    /// Everything written, from the start (for a checkpoint). Reads by offset, so the
    /// file's own position (where appends go) does not move.
    pub fn reader(&mut self) -> io::Result<impl Read + '_> {
        self.writer.flush()?;
        Ok(WholeFile {
            file: self.writer.get_ref(),
            at: 0,
            len: self.len,
        })
    }
}

struct WholeFile<'a> {
    file: &'a File,
    at: u64,
    len: u64,
}

impl Read for WholeFile<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = (self.len - self.at).min(buf.len() as u64) as usize;
        if left == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..left], self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_come_back_by_span_and_whole() {
        let mut spill = Spill::new().unwrap();
        let a = spill.append(b"first").unwrap();
        let b = spill.append(b"second record").unwrap();
        assert_eq!(spill.read(b).unwrap(), b"second record");
        assert_eq!(spill.read(a).unwrap(), b"first");
        let mut all = Vec::new();
        spill.reader().unwrap().read_to_end(&mut all).unwrap();
        let mut copy = Spill::from_reader(&all[..]).unwrap();
        assert_eq!(copy.read(b).unwrap(), b"second record");
        assert_eq!(copy.len(), 18);
    }
}
