//! The frame codec: how Raft messages sit in a peer stream.
//!
//! A frame is a `u32` big-endian length followed by that many bytes of a
//! protobuf-encoded [`Message`]. Both directions are pure functions over
//! byte slices ([`encode_frame`], [`decode_frame`]) so the server's read
//! loop, the peer task and the tests share one definition and the decoder
//! can be fuzzed without sockets.
//!
//! The length is judged before a single payload byte is looked at: a
//! declared length above [`MAX_MESSAGE_BYTES`] is reported as
//! [`Decoded::Oversized`] straight from the four header bytes, so a reader
//! never buffers more than the cap for one frame, and protobuf (2.28, see
//! RUSTSEC-2024-0437) only ever sees bounded input from an authenticated
//! node.

use raft::eraftpb::Message;

/// The largest protobuf payload one frame may carry: 64 MiB.
///
/// Raft snapshots travel as a single `MsgSnapshot` holding the whole
/// state-machine image, so the cap bounds the snapshot size as well: a
/// cluster whose store grows past this needs snapshot chunking before it
/// needs a larger cap. Everything else (appends of a bounded batch of
/// entries, heartbeats, votes) is far smaller.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// Bytes of the length prefix in front of every payload.
pub const FRAME_HEADER_BYTES: usize = 4;

/// A message that cannot be put into a frame.
#[derive(Debug, thiserror::Error)]
pub enum FrameEncodeError {
    /// The encoded message would exceed [`MAX_MESSAGE_BYTES`].
    #[error("message encodes to {size} bytes, more than the {MAX_MESSAGE_BYTES}-byte frame cap")]
    TooLarge {
        /// The encoded size.
        size: usize,
    },
    /// protobuf refused to encode the message.
    #[error("cannot encode the raft message")]
    Encode(#[source] protobuf::ProtobufError),
}

/// Appends one frame holding `message` to `out`; returns the frame's length
/// (header included). On error `out` is left as it was.
pub fn encode_frame(message: &Message, out: &mut Vec<u8>) -> Result<usize, FrameEncodeError> {
    use protobuf::Message as _;
    let size = usize::try_from(message.compute_size()).unwrap_or(usize::MAX);
    if size > MAX_MESSAGE_BYTES {
        return Err(FrameEncodeError::TooLarge { size });
    }
    let header = u32::try_from(size).map_err(|_| FrameEncodeError::TooLarge { size })?;
    let start = out.len();
    out.reserve(FRAME_HEADER_BYTES + size);
    out.extend_from_slice(&header.to_be_bytes());
    if let Err(e) = message.write_to_vec(out) {
        out.truncate(start);
        return Err(FrameEncodeError::Encode(e));
    }
    let written = out.len() - start;
    if written != FRAME_HEADER_BYTES + size {
        // compute_size and write_to disagreeing would desynchronise the
        // stream for every later frame; refuse rather than send it.
        out.truncate(start);
        return Err(FrameEncodeError::TooLarge {
            size: written - FRAME_HEADER_BYTES,
        });
    }
    Ok(written)
}

/// What the front of a byte buffer holds.
#[derive(Debug)]
pub enum Decoded {
    /// Not a whole frame yet: at least `needed` more bytes must arrive.
    Incomplete {
        /// Bytes still missing before the next frame can be judged.
        needed: usize,
    },
    /// One whole, well-formed frame.
    Frame {
        /// The decoded message.
        message: Box<Message>,
        /// Bytes the frame took (header and payload).
        consumed: usize,
    },
    /// A whole frame whose payload is not a Raft message. The framing is
    /// intact, so the reader skips `consumed` bytes and carries on.
    Malformed {
        /// Bytes the frame took (header and payload).
        consumed: usize,
        /// Why protobuf refused it.
        error: protobuf::ProtobufError,
    },
    /// The header declares a payload above [`MAX_MESSAGE_BYTES`]. Nothing is
    /// consumed: the stream cannot be resynchronised without reading the
    /// declared bytes, which is exactly what the cap forbids.
    Oversized {
        /// The length the header declared.
        declared: u32,
    },
}

/// Judges the frame at the front of `buf`.
pub fn decode_frame(buf: &[u8]) -> Decoded {
    let Some((header, rest)) = buf.split_first_chunk::<FRAME_HEADER_BYTES>() else {
        return Decoded::Incomplete {
            needed: FRAME_HEADER_BYTES - buf.len(),
        };
    };
    let declared = u32::from_be_bytes(*header);
    let len = usize::try_from(declared).unwrap_or(usize::MAX);
    if len > MAX_MESSAGE_BYTES {
        return Decoded::Oversized { declared };
    }
    let Some(payload) = rest.get(..len) else {
        return Decoded::Incomplete {
            needed: len - rest.len(),
        };
    };
    let consumed = FRAME_HEADER_BYTES + len;
    match <Message as protobuf::Message>::parse_from_bytes(payload) {
        Ok(message) => Decoded::Frame {
            message: Box::new(message),
            consumed,
        },
        Err(error) => Decoded::Malformed { consumed, error },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use raft::eraftpb::{Entry, MessageType, Snapshot};

    fn append(from: u64, to: u64, index: u64, data: &[u8]) -> Message {
        let entry = Entry {
            index,
            term: 3,
            data: data.to_vec().into(),
            ..Default::default()
        };
        let mut msg = Message::default();
        msg.set_msg_type(MessageType::MsgAppend);
        msg.from = from;
        msg.to = to;
        msg.term = 3;
        msg.index = index - 1;
        msg.entries = vec![entry].into();
        msg
    }

    fn frame_of(msg: &Message) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(msg, &mut out).expect("encodes");
        out
    }

    #[test]
    fn a_frame_round_trips_and_reports_its_length() {
        let msg = append(1, 2, 7, b"hello");
        let bytes = frame_of(&msg);
        match decode_frame(&bytes) {
            Decoded::Frame { message, consumed } => {
                assert_eq!(*message, msg);
                assert_eq!(consumed, bytes.len());
            }
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    #[test]
    fn frames_are_appended_not_overwritten() {
        let mut out = b"prefix".to_vec();
        let n = encode_frame(&append(1, 2, 2, b"x"), &mut out).expect("encodes");
        assert_eq!(&out[..6], b"prefix");
        assert_eq!(out.len(), 6 + n);
    }

    #[test]
    fn a_partial_frame_asks_for_exactly_the_missing_bytes() {
        let bytes = frame_of(&append(1, 2, 5, b"abcdef"));
        for cut in 0..bytes.len() {
            match decode_frame(&bytes[..cut]) {
                Decoded::Incomplete { needed } if cut < FRAME_HEADER_BYTES => {
                    assert_eq!(needed, FRAME_HEADER_BYTES - cut);
                }
                Decoded::Incomplete { needed } => assert_eq!(needed, bytes.len() - cut),
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_length_above_the_cap_is_refused_from_the_header_alone() {
        let declared = u32::try_from(MAX_MESSAGE_BYTES + 1).expect("fits");
        let header = declared.to_be_bytes();
        assert!(matches!(
            decode_frame(&header),
            Decoded::Oversized { declared: d } if d == declared
        ));
        assert!(matches!(
            decode_frame(&u32::MAX.to_be_bytes()),
            Decoded::Oversized { declared: u32::MAX }
        ));
    }

    #[test]
    fn a_length_at_the_cap_waits_for_its_payload() {
        let declared = u32::try_from(MAX_MESSAGE_BYTES).expect("fits");
        assert!(matches!(
            decode_frame(&declared.to_be_bytes()),
            Decoded::Incomplete { needed } if needed == MAX_MESSAGE_BYTES
        ));
    }

    #[test]
    fn a_garbage_payload_is_malformed_and_skippable() {
        // Field 15 with wire type 7 does not exist in protobuf.
        let mut bytes = 3u32.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0x7f, 0xff, 0xff]);
        let next = frame_of(&append(1, 2, 9, b"after"));
        bytes.extend_from_slice(&next);
        let Decoded::Malformed { consumed, .. } = decode_frame(&bytes) else {
            panic!("expected malformed");
        };
        assert_eq!(consumed, 7);
        assert!(matches!(
            decode_frame(&bytes[consumed..]),
            Decoded::Frame { .. }
        ));
    }

    #[test]
    fn a_message_above_the_cap_is_not_encoded() {
        let mut msg = Message::default();
        msg.set_msg_type(MessageType::MsgSnapshot);
        let snapshot = Snapshot {
            data: vec![0u8; MAX_MESSAGE_BYTES].into(),
            ..Default::default()
        };
        msg.set_snapshot(snapshot);
        let mut out = vec![1, 2, 3];
        assert!(matches!(
            encode_frame(&msg, &mut out),
            Err(FrameEncodeError::TooLarge { size }) if size > MAX_MESSAGE_BYTES
        ));
        assert_eq!(out, vec![1, 2, 3]);
    }

    /// Runs the decoder over `bytes` the way the server does, returning what
    /// it made of them.
    fn decode_all(bytes: &[u8]) -> (Vec<Message>, usize, bool) {
        let mut at = 0;
        let mut messages = Vec::new();
        let mut malformed = 0;
        loop {
            match decode_frame(&bytes[at..]) {
                Decoded::Incomplete { needed } => {
                    assert!(needed > 0);
                    return (messages, malformed, false);
                }
                Decoded::Frame { message, consumed } => {
                    assert!(consumed >= FRAME_HEADER_BYTES && at + consumed <= bytes.len());
                    messages.push(*message);
                    at += consumed;
                }
                Decoded::Malformed { consumed, .. } => {
                    assert!(consumed >= FRAME_HEADER_BYTES && at + consumed <= bytes.len());
                    malformed += 1;
                    at += consumed;
                }
                Decoded::Oversized { declared } => {
                    assert!(usize::try_from(declared).expect("fits") > MAX_MESSAGE_BYTES);
                    return (messages, malformed, true);
                }
            }
        }
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let _ = decode_all(&bytes);
        }

        #[test]
        fn random_payloads_behind_a_valid_length_never_panic(payload in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let mut bytes = u32::try_from(payload.len()).expect("small").to_be_bytes().to_vec();
            bytes.extend_from_slice(&payload);
            let (messages, malformed, oversized) = decode_all(&bytes);
            prop_assert!(!oversized);
            prop_assert_eq!(messages.len() + malformed, 1);
        }

        #[test]
        fn valid_frames_round_trip_in_order_however_the_stream_is_cut(
            specs in proptest::collection::vec((1u64..10, 1u64..10, 1u64..1000, proptest::collection::vec(any::<u8>(), 0..300)), 1..20),
            cut in any::<prop::sample::Index>(),
        ) {
            let sent: Vec<Message> = specs.iter().map(|(f, t, i, d)| append(*f, *t, *i, d)).collect();
            let mut stream = Vec::new();
            for msg in &sent {
                encode_frame(msg, &mut stream).expect("encodes");
            }
            // Whatever the prefix, only whole frames come out of it, in order.
            let cut = cut.index(stream.len() + 1);
            let (prefix, _, _) = decode_all(&stream[..cut]);
            prop_assert_eq!(&prefix[..], &sent[..prefix.len()]);
            let (all, malformed, oversized) = decode_all(&stream);
            prop_assert_eq!(all, sent);
            prop_assert_eq!(malformed, 0);
            prop_assert!(!oversized);
        }
    }
}
