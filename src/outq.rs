//! The frames waiting to be written to one socket.
//!
//! Frames are `Bytes`, so a broadcast queued on many sockets is one buffer
//! with many references: pushing it is a reference-count increment and a
//! `VecDeque` slot, with no copy of the payload.

use bytes::Bytes;
use std::collections::VecDeque;

/// Slots an empty queue may keep: enough for steady traffic, so only bursts
/// reallocate.
const IDLE_SLOTS: usize = 8;

#[derive(Debug, Default)]
pub struct WriteQueue {
    frames: VecDeque<Bytes>,
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
        self.frames.push_back(frame);
    }

    /// Queues a reference to `frame` if the backlog stays within `max_bytes`;
    /// returns whether it did.
    #[inline]
    pub fn try_push(&mut self, frame: &Bytes, max_bytes: usize) -> bool {
        if self.bytes + frame.len() > max_bytes {
            return false;
        }
        self.bytes += frame.len();
        self.frames.push_back(frame.clone());
        true
    }

    /// Whether `len` more bytes would stay within `max_bytes`.
    pub fn fits(&self, len: usize, max_bytes: usize) -> bool {
        self.bytes + len <= max_bytes
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Unwritten bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The queued frames and how much of the first is already written.
    pub fn unsent(&self) -> (impl Iterator<Item = &Bytes>, usize) {
        (self.frames.iter(), self.sent_offset as usize)
    }

    /// Marks `sent` bytes (from the front) written. A queue that grew for a
    /// burst (a newcomer's chat history, a stalled reader) gives its slots
    /// back once it drains, so an idle connection keeps no burst-sized buffer.
    pub fn advance(&mut self, sent: usize) {
        self.advance_frames(sent);
        if self.frames.is_empty() && self.frames.capacity() > IDLE_SLOTS {
            self.frames = VecDeque::new();
        }
    }

    fn advance_frames(&mut self, mut sent: usize) {
        self.bytes -= sent;
        while sent > 0 {
            let front = self.frames.front().expect("no more was written than was queued");
            let left = front.len() - self.sent_offset as usize;
            if sent >= left {
                sent -= left;
                self.sent_offset = 0;
                self.frames.pop_front();
            } else {
                self.sent_offset += sent as u32;
                sent = 0;
            }
        }
    }

    /// Keeps only the first `n` frames (those a send in flight may be writing).
    pub fn keep_front(&mut self, n: usize) {
        self.frames.truncate(n);
        self.bytes = self.frames.iter().map(Bytes::len).sum::<usize>() - self.sent_offset as usize;
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
    fn a_drained_queue_gives_back_its_burst_slots() {
        let mut q = WriteQueue::new();
        for _ in 0..100 {
            q.push(Bytes::from_static(b"history"));
        }
        assert!(q.frames.capacity() >= 100);
        q.advance(700);
        assert!(q.is_empty());
        assert_eq!(q.frames.capacity(), 0, "the burst's slots are released");
        // Steady traffic keeps its few slots.
        q.push(Bytes::from_static(b"a"));
        q.push(Bytes::from_static(b"b"));
        let steady = q.frames.capacity();
        q.advance(2);
        assert_eq!(q.frames.capacity(), steady);
    }
}
