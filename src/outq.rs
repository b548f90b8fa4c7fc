//! The frames waiting to be written to one socket.
//!
//! Frames are `Bytes`, so a broadcast queued on many sockets is one buffer
//! with many references: pushing it is a reference-count increment and a
//! slot, with no copy of the payload.
//!
//! The front frame lives in the queue itself and only the frames behind it in
//! a boxed `VecDeque`, allocated while more than one frame waits and released
//! as soon as they are written. An idle socket, or one that keeps up with its
//! traffic, owns no heap memory for its queue: at tens of thousands of
//! sockets, a kept 4-slot deque was 128 B per connection (a fifth of a
//! connection's memory, measured with heaptrack on 15,000 idle sockets).

use bytes::Bytes;
use std::collections::VecDeque;

#[derive(Debug, Default)]
pub struct WriteQueue {
    /// The first unwritten frame.
    front: Option<Bytes>,
    /// The frames behind it; none unless more than one waits. Boxed: the
    /// queue is in every socket's record, and the deque is rarely there.
    #[allow(clippy::box_collection)] // 8 bytes in every record instead of 32
    rest: Option<Box<VecDeque<Bytes>>>,
    /// Bytes queued and not yet written (the front frame's written part aside).
    bytes: usize,
    /// Bytes of the front frame already written.
    sent_offset: u32,
}

impl WriteQueue {
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues `frame` whatever the backlog.
    pub fn push(&mut self, frame: Bytes) {
        self.bytes += frame.len();
        if self.front.is_none() {
            self.front = Some(frame);
        } else {
            self.rest.get_or_insert_default().push_back(frame);
        }
    }

    /// Queues a reference to `frame` if the backlog stays within `max_bytes`;
    /// returns whether it did.
    #[inline]
    pub fn try_push(&mut self, frame: &Bytes, max_bytes: usize) -> bool {
        if !self.fits(frame.len(), max_bytes) {
            return false;
        }
        self.push(frame.clone());
        true
    }

    /// Whether `len` more bytes would stay within `max_bytes`.
    pub fn fits(&self, len: usize, max_bytes: usize) -> bool {
        self.bytes + len <= max_bytes
    }

    pub fn is_empty(&self) -> bool {
        self.front.is_none()
    }

    /// Unwritten bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The queued frames and how much of the first is already written.
    pub fn unsent(&self) -> (impl Iterator<Item = &Bytes>, usize) {
        (self.front.iter().chain(self.rest.iter().flat_map(|rest| rest.iter())), self.sent_offset as usize)
    }

    /// Marks `sent` bytes (from the front) written. Once the frames behind
    /// the front are all written, their deque is released, so a burst (a
    /// newcomer's chat history, a stalled reader) leaves nothing behind.
    pub fn advance(&mut self, mut sent: usize) {
        self.bytes -= sent;
        while sent > 0 {
            let front = self.front.as_ref().expect("no more was written than was queued");
            let left = front.len() - self.sent_offset as usize;
            if sent >= left {
                sent -= left;
                self.sent_offset = 0;
                self.front = self.rest.as_mut().and_then(|rest| rest.pop_front());
            } else {
                self.sent_offset += sent as u32;
                sent = 0;
            }
        }
        if self.rest.as_ref().is_some_and(|rest| rest.is_empty()) {
            self.rest = None;
        }
    }

    /// Keeps only the first `n` frames (those a send in flight may be writing).
    pub fn keep_front(&mut self, n: usize) {
        if n == 0 {
            self.front = None;
            self.sent_offset = 0;
        }
        if let Some(rest) = &mut self.rest {
            rest.truncate(n.saturating_sub(1));
            if rest.is_empty() {
                self.rest = None;
            }
        }
        let queued: usize = self.unsent().0.map(Bytes::len).sum();
        self.bytes = queued - self.sent_offset as usize;
    }

    /// Whether part of the front frame has been written.
    pub fn front_started(&self) -> bool {
        self.sent_offset > 0
    }

    pub fn clear(&mut self) {
        *self = WriteQueue::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Push(u8),
        /// Write this share (of 256) of what is queued.
        Advance(u8),
        KeepFront(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![(1u8..40).prop_map(Op::Push), any::<u8>().prop_map(Op::Advance), (0u8..4).prop_map(Op::KeepFront)]
    }

    proptest! {
        /// The queue writes exactly what a plain list of frames would, in
        /// order, and holds a tail deque only while more than one frame waits.
        #[test]
        fn behaves_like_a_list_of_frames(ops in proptest::collection::vec(op(), 0..200)) {
            let mut q = WriteQueue::new();
            let mut model: VecDeque<Vec<u8>> = VecDeque::new();
            let mut offset = 0usize;
            let mut next = 0u8;
            for op in ops {
                match op {
                    Op::Push(len) => {
                        let frame: Vec<u8> = (0..len).map(|i| next.wrapping_add(i)).collect();
                        next = next.wrapping_add(len);
                        q.push(Bytes::from(frame.clone()));
                        model.push_back(frame);
                    }
                    Op::Advance(share) => {
                        let queued: usize = model.iter().map(Vec::len).sum::<usize>() - offset;
                        let mut sent = queued * usize::from(share) / 256;
                        q.advance(sent);
                        while sent > 0 {
                            let left = model[0].len() - offset;
                            if sent >= left {
                                sent -= left;
                                offset = 0;
                                model.pop_front();
                            } else {
                                offset += sent;
                                sent = 0;
                            }
                        }
                    }
                    Op::KeepFront(n) => {
                        q.keep_front(usize::from(n));
                        model.truncate(usize::from(n));
                        if n == 0 {
                            offset = 0;
                        }
                    }
                }
                let (frames, sent_offset) = q.unsent();
                let got: Vec<Vec<u8>> = frames.map(|f| f.to_vec()).collect();
                prop_assert_eq!(&got, &Vec::from(model.clone()));
                prop_assert_eq!(sent_offset, offset);
                prop_assert_eq!(q.bytes(), model.iter().map(Vec::len).sum::<usize>() - offset);
                prop_assert_eq!(q.is_empty(), model.is_empty());
                prop_assert_eq!(q.rest.is_some(), model.len() > 1);
            }
        }
    }

    #[test]
    fn partial_writes_advance_through_frames() {
        let mut q = WriteQueue::new();
        q.push(Bytes::from_static(b"abc"));
        q.push(Bytes::from_static(b"defg"));
        assert_eq!(q.bytes(), 7);
        q.advance(2);
        assert_eq!((q.bytes(), q.unsent().1), (5, 2));
        assert!(q.front_started());
        // The rest of "abc" and "de" of "defg".
        q.advance(3);
        assert_eq!((q.bytes(), q.unsent().1), (2, 2));
        q.push(Bytes::from_static(b"hij"));
        q.keep_front(1);
        assert_eq!(q.bytes(), 2, "only the started frame is kept");
        q.advance(2);
        assert!(q.is_empty());
        assert_eq!(q.bytes(), 0);
    }

    #[test]
    fn try_push_respects_the_bound() {
        let mut q = WriteQueue::new();
        let frame = Bytes::from_static(b"0123456789");
        assert!(q.try_push(&frame, 20));
        assert!(q.try_push(&frame, 20));
        assert!(!q.try_push(&frame, 20));
        assert!(q.fits(0, 20));
        assert_eq!(q.bytes(), 20);
    }

    #[test]
    fn a_queue_allocates_only_while_frames_wait_behind_the_front() {
        let mut q = WriteQueue::new();
        q.push(Bytes::from_static(b"a"));
        assert!(q.rest.is_none(), "one frame is held inline");
        for _ in 0..100 {
            q.push(Bytes::from_static(b"history"));
        }
        assert_eq!(q.rest.as_ref().map(|rest| rest.len()), Some(100));
        let order: Vec<&[u8]> = q.unsent().0.take(2).map(|b| &b[..]).collect();
        assert_eq!(order, [&b"a"[..], b"history"]);
        q.advance(701);
        assert!(q.is_empty());
        assert!(q.rest.is_none(), "the burst's slots are released");
        q.push(Bytes::from_static(b"b"));
        q.push(Bytes::from_static(b"c"));
        q.advance(1);
        assert_eq!(q.bytes(), 1);
        assert!(q.rest.is_none(), "released once only the front is left");
    }

    #[test]
    fn keep_front_keeps_the_frames_in_flight() {
        let mut q = WriteQueue::new();
        for frame in [&b"abc"[..], b"de", b"f"] {
            q.push(Bytes::from_static(frame));
        }
        q.advance(1);
        q.keep_front(2);
        assert_eq!((q.bytes(), q.unsent().1), (4, 1));
        q.keep_front(0);
        assert!(q.is_empty());
        assert_eq!((q.bytes(), q.unsent().1), (0, 0));
    }
}
