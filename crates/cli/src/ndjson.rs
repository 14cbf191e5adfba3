//! Splitting a byte stream into NDJSON lines, whatever the chunking.

/// Collects chunks and hands out complete lines (without the newline and
/// an optional carriage return; blank lines are skipped).
#[derive(Debug, Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// Adds a chunk and returns the lines it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Vec<u8>> {
        let mut lines = Vec::new();
        let mut rest = chunk;
        while let Some(at) = rest.iter().position(|&b| b == b'\n') {
            self.pending.extend_from_slice(&rest[..at]);
            rest = &rest[at + 1..];
            let mut line = std::mem::take(&mut self.pending);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if !line.iter().all(u8::is_ascii_whitespace) {
                lines.push(line);
            }
        }
        self.pending.extend_from_slice(rest);
        lines
    }

    /// The last line when the stream ended without a newline.
    pub fn finish(self) -> Option<Vec<u8>> {
        let mut line = self.pending;
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        (!line.iter().all(u8::is_ascii_whitespace)).then_some(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn lines_split_across_chunks_are_joined() {
        let mut s = LineSplitter::default();
        assert!(s.push(b"{\"a\":").is_empty());
        assert_eq!(s.push(b"1}\n{\"b\""), vec![b"{\"a\":1}".to_vec()]);
        assert_eq!(s.push(b":2}\r\n\n"), vec![b"{\"b\":2}".to_vec()]);
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn a_final_line_without_newline_is_kept() {
        let mut s = LineSplitter::default();
        assert!(s.push(b"{}\n{\"x\":1}").len() == 1);
        assert_eq!(s.finish(), Some(b"{\"x\":1}".to_vec()));
    }

    proptest! {
        #[test]
        fn any_chunking_yields_the_same_lines(
            lines in proptest::collection::vec("[a-z{}:\" ]{1,20}", 0..20),
            cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..10),
        ) {
            let lines: Vec<String> = lines.into_iter().filter(|l| !l.trim().is_empty()).collect();
            let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
            let bytes = text.as_bytes();
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
            points.sort_unstable();
            let mut s = LineSplitter::default();
            let mut got = Vec::new();
            let mut from = 0;
            for p in points.into_iter().chain([bytes.len()]) {
                got.extend(s.push(&bytes[from..p]));
                from = p;
            }
            prop_assert_eq!(s.finish(), None);
            let expected: Vec<Vec<u8>> = lines.iter().map(|l| l.as_bytes().to_vec()).collect();
            prop_assert_eq!(got, expected);
        }
    }
}
