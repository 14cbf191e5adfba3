//! [`ChannelReader`]: bytes from async code to a blocking reader, and
//! [`ChannelWriter`]: bytes from a blocking writer to async code.

use std::io::{self, Read, Write};

use bytes::Bytes;
use tokio::sync::mpsc;

/// The blocking side of a stream: reads the chunks the async side sends
/// over a bounded channel, so memory holds at most the channel's chunks.
/// The end of the channel is the end of the stream; an error sent is the
/// reader's error.
#[derive(Debug)]
pub struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl ChannelReader {
    /// Reads what is sent on `rx`.
    pub fn new(rx: mpsc::Receiver<io::Result<Bytes>>) -> Self {
        Self {
            rx,
            current: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        let chunk = self.current.split_to(n);
        if let Some(dest) = buf.get_mut(..n) {
            dest.copy_from_slice(&chunk);
        }
        Ok(n)
    }
}

/// The blocking side of a download: sends what is written, one chunk per
/// write (wrap it in a `BufWriter` for chunks of a useful size). A
/// receiver that went away is a broken pipe.
#[derive(Debug)]
pub struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
}

impl ChannelWriter {
    /// Sends what is written on `tx`.
    pub fn new(tx: mpsc::Sender<io::Result<Bytes>>) -> Self {
        Self { tx }
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tx
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
