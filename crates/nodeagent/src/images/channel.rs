//! [`ChannelReader`]: bytes from async code to a blocking reader.

use std::io::{self, Read};

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
