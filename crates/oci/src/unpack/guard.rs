//! A reader that walks the tar stream's headers as the bytes pass and
//! refuses absurdly large extension records (GNU long names and links, PAX
//! headers) before the `tar` crate reads them into memory whole.
//!
//! Without this, a layer could claim a 10 GiB "long name" (or inflate one
//! from a small gzip) and the tar reader would try to hold it; the
//! planner's `MAX_PATH` check would come too late.

use std::io::{self, Read};

/// Longest GNU long name or long link accepted (PATH_MAX is 4096).
pub const MAX_LONG_NAME: u64 = 64 * 1024;
/// Largest PAX extended header accepted (xattrs live here).
pub const MAX_PAX: u64 = 1024 * 1024;

const BLOCK: usize = 512;

#[derive(Debug)]
enum State {
    /// Collecting a 512-byte header block.
    Header,
    /// Collecting old-GNU sparse extension blocks that follow a header.
    SparseExt,
    /// Passing `remaining` bytes of data (padded to blocks); captures it
    /// when it is a PAX header so a `size` override can be honoured.
    Data { remaining: u64, capture: bool },
    /// The stream could not be followed (the tar reader will fail on it):
    /// stop checking rather than raise false alarms.
    Lost,
}

#[derive(Debug)]
pub struct HeaderGuard<R> {
    inner: R,
    state: State,
    block: Vec<u8>,
    pax: Vec<u8>,
    size_override: Option<u64>,
    /// The data size of a sparse header while its extension blocks pass.
    pending_size: Option<u64>,
}

impl<R: Read> HeaderGuard<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            state: State::Header,
            block: Vec::with_capacity(BLOCK),
            pax: Vec::new(),
            size_override: None,
            pending_size: None,
        }
    }

    pub fn into_inner(self) -> R {
        self.inner
    }
}

fn parse_size(field: &[u8]) -> Option<u64> {
    let first = *field.first()?;
    if first & 0x80 != 0 {
        // base-256, big-endian, top bit of the first byte is the marker
        let mut v: u64 = u64::from(first & 0x7f);
        for b in field.get(1..)? {
            v = v.checked_mul(256)?.checked_add(u64::from(*b))?;
        }
        return Some(v);
    }
    let text: Vec<u8> = field
        .iter()
        .copied()
        .filter(|b| *b != 0 && *b != b' ')
        .collect();
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(std::str::from_utf8(&text).ok()?, 8).ok()
}

/// The `size` record of a PAX header, if any (`"<len> size=<n>\n"`).
fn pax_size(records: &[u8]) -> Option<u64> {
    records.split(|b| *b == b'\n').find_map(|rec| {
        let (_, kv) = rec.split_at(rec.iter().position(|b| *b == b' ')? + 1);
        let v = kv.strip_prefix(b"size=")?;
        std::str::from_utf8(v).ok()?.parse().ok()
    })
}

fn refuse(what: &str, size: u64, max: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("tar {what} of {size} bytes is absurdly long (the limit is {max})"),
    )
}

impl<R: Read> HeaderGuard<R> {
    fn observe(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut rest = bytes;
        while !rest.is_empty() {
            match &mut self.state {
                State::Lost => return Ok(()),
                State::Data { remaining, capture } => {
                    let take = rest
                        .len()
                        .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                    let (now, later) = rest.split_at(take);
                    if *capture {
                        self.pax.extend_from_slice(now);
                    }
                    *remaining -= take as u64;
                    rest = later;
                    if *remaining == 0 {
                        if *capture {
                            self.size_override = pax_size(&self.pax);
                            self.pax.clear();
                        }
                        self.state = State::Header;
                    }
                }
                State::Header | State::SparseExt => {
                    let take = rest.len().min(BLOCK - self.block.len());
                    let (now, later) = rest.split_at(take);
                    self.block.extend_from_slice(now);
                    rest = later;
                    if self.block.len() == BLOCK {
                        self.end_block()?;
                        self.block.clear();
                    }
                }
            }
        }
        Ok(())
    }

    fn end_block(&mut self) -> io::Result<()> {
        let block = &self.block;
        if matches!(self.state, State::SparseExt) {
            let more = block.get(504).copied().unwrap_or(0) != 0;
            if !more {
                let size = self.pending_size.take().unwrap_or(0);
                self.state = data_state(size, false);
            }
            return Ok(());
        }
        if block.iter().all(|b| *b == 0) {
            return Ok(()); // end-of-archive padding
        }
        let kind = block.get(156).copied().unwrap_or(0);
        let Some(header_size) = block.get(124..136).and_then(parse_size) else {
            self.state = State::Lost;
            return Ok(());
        };
        let is_extension = matches!(kind, b'L' | b'K' | b'x' | b'g');
        let size = if is_extension {
            header_size
        } else {
            self.size_override.take().unwrap_or(header_size)
        };
        match kind {
            b'L' | b'K' if size > MAX_LONG_NAME => {
                return Err(refuse("long name record", size, MAX_LONG_NAME));
            }
            b'x' | b'g' if size > MAX_PAX => return Err(refuse("PAX header", size, MAX_PAX)),
            _ => {}
        }
        if kind == b'S' && block.get(482).copied().unwrap_or(0) != 0 {
            self.pending_size = Some(size);
            self.state = State::SparseExt;
        } else {
            self.state = data_state(size, kind == b'x');
        }
        Ok(())
    }
}

fn data_state(size: u64, capture: bool) -> State {
    let padded = size.div_ceil(BLOCK as u64).saturating_mul(BLOCK as u64);
    if padded == 0 {
        State::Header
    } else {
        State::Data {
            remaining: padded,
            capture,
        }
    }
}

impl<R: Read> Read for HeaderGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.observe(buf.get(..n).unwrap_or_default())?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: u8, size: u64) -> Vec<u8> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::new(kind));
        h.set_size(size);
        h.set_cksum();
        h.as_bytes().to_vec()
    }

    #[test]
    fn a_huge_long_name_is_refused_before_it_is_read() {
        let stream = header(b'L', 1 << 40);
        let err = io::copy(&mut HeaderGuard::new(&stream[..]), &mut io::sink()).unwrap_err();
        assert!(err.to_string().contains("absurdly long"), "{err}");
    }

    #[test]
    fn a_huge_pax_header_is_refused() {
        let stream = header(b'x', MAX_PAX + 1);
        assert!(io::copy(&mut HeaderGuard::new(&stream[..]), &mut io::sink()).is_err());
    }

    #[test]
    fn ordinary_archives_pass_untouched_whatever_the_read_sizes() {
        let mut b = tar::Builder::new(Vec::new());
        let long = format!("{}/file", "d".repeat(200));
        let mut h = tar::Header::new_gnu();
        h.set_size(1000);
        h.set_mode(0o644);
        b.append_data(&mut h, &long, &[7u8; 1000][..]).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        b.append_data(&mut h, "short", &b"abc"[..]).unwrap();
        let bytes = b.into_inner().unwrap();
        for chunk in [1, 7, 512, 4096] {
            let mut guard = HeaderGuard::new(ChunkReader(&bytes[..], chunk));
            let mut out = Vec::new();
            guard.read_to_end(&mut out).unwrap();
            assert_eq!(out, bytes);
            assert!(matches!(guard.state, State::Header), "{:?}", guard.state);
        }
    }

    #[test]
    fn a_pax_size_override_is_followed() {
        let mut stream = Vec::new();
        let rec = b"17 size=1000000\n";
        stream.extend(header(b'x', rec.len() as u64));
        stream.extend_from_slice(rec);
        stream.resize(1024, 0);
        // The next header claims 0 bytes, the PAX record says 1000000: a
        // long-name-looking block inside that data must not be parsed.
        stream.extend(header(b'0', 0));
        stream.extend(header(b'L', 1 << 40));
        let mut guard = HeaderGuard::new(&stream[..]);
        io::copy(&mut guard, &mut io::sink()).unwrap();
        assert!(matches!(guard.state, State::Data { .. }));
    }

    struct ChunkReader<'a>(&'a [u8], usize);

    impl Read for ChunkReader<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.1).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
}
