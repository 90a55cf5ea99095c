//! A socket's queue of waiting operations with its first op inline.
//!
//! At 1,000 active connections the hot path touched the queued receive's `armed` flag in the
//! queue's own heap buffer, one cache line per connection outside the socket, which showed
//! as the top load of `progress` (benches/README.md, "The host kernel at 1,000
//! connections"). A socket rarely has more than one op of a kind waiting (the echo driver
//! never does), so the first lives in the socket itself and only the ones behind it go to
//! a heap buffer, allocated on the first use.

use std::collections::VecDeque;

use super::Op;
use super::glue::IrpPtr;

/// Waiting ops served first come first served: `first` is the front, `behind` the rest in
/// order. Invariant: `behind` is empty while `first` is `None`.
#[derive(Default)]
pub(super) struct OpQueue {
    first: Option<Op>,
    behind: VecDeque<Op>,
}

impl OpQueue {
    /// An empty queue; allocates nothing.
    pub(super) fn new() -> Self {
        Self::default()
    }

    /// Queues `op` behind every op already waiting.
    pub(super) fn push_back(&mut self, op: Op) {
        if self.first.is_none() {
            self.first = Some(op);
        } else {
            self.behind.push_back(op);
        }
    }

    /// Whether no op waits.
    pub(super) fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    /// How many ops wait.
    pub(super) fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.behind.len()
    }

    /// The op served next.
    pub(super) fn front_mut(&mut self) -> Option<&mut Op> {
        self.first.as_mut()
    }

    /// Takes out the op served next; the one behind it moves up.
    pub(super) fn pop_front(&mut self) -> Option<Op> {
        let front = self.first.take();
        self.first = self.behind.pop_front();
        front
    }

    /// Every waiting op, front first.
    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = &mut Op> {
        self.first.iter_mut().chain(self.behind.iter_mut())
    }

    /// Takes out every waiting op, front first.
    pub(super) fn drain(&mut self) -> impl Iterator<Item = Op> + use<> {
        let first = self.first.take();
        let behind = core::mem::take(&mut self.behind);
        first.into_iter().chain(behind)
    }

    /// Takes out the op of `irp`, wherever it waits; the order of the others is kept.
    pub(super) fn remove(&mut self, irp: IrpPtr) -> Option<Op> {
        if self.first.as_ref().is_some_and(|o| o.irp == irp) {
            return self.pop_front();
        }
        let at = self.behind.iter().position(|o| o.irp == irp)?;
        self.behind.remove(at)
    }
}

#[cfg(test)]
mod tests {
    use super::super::OpKind;
    use super::*;
    use crate::IRP;

    /// A distinct tag per op; the queue compares IRP pointers and never reads through them.
    fn irp(tag: usize) -> IrpPtr {
        IrpPtr::new(core::ptr::without_provenance_mut::<IRP>(tag * 64)).expect("a non-null tag")
    }

    fn op(tag: usize) -> Op {
        Op::new(
            irp(tag),
            OpKind::Connect {
                info: tag,
                destroy_on_fail: false,
            },
        )
    }

    fn tags(queue: &mut OpQueue) -> Vec<IrpPtr> {
        queue.iter_mut().map(|o| o.irp).collect()
    }

    #[test]
    fn serves_first_come_first_served_across_the_inline_slot() {
        let mut queue = OpQueue::new();
        assert!(queue.is_empty());
        assert!(queue.front_mut().is_none());
        for tag in 1..=3 {
            queue.push_back(op(tag));
        }
        assert_eq!(queue.len(), 3);
        assert_eq!(tags(&mut queue), [irp(1), irp(2), irp(3)]);
        assert_eq!(queue.pop_front().map(|o| o.irp), Some(irp(1)));
        assert_eq!(queue.front_mut().map(|o| o.irp), Some(irp(2)));
        queue.push_back(op(4));
        assert_eq!(tags(&mut queue), [irp(2), irp(3), irp(4)]);
        let drained: Vec<IrpPtr> = queue.drain().map(|o| o.irp).collect();
        assert_eq!(drained, [irp(2), irp(3), irp(4)]);
        assert!(queue.is_empty());
        assert_eq!(queue.len(), 0);
        assert!(queue.pop_front().is_none());
    }

    #[test]
    fn removes_an_op_anywhere_keeping_the_others_order() {
        let mut queue = OpQueue::new();
        for tag in 1..=4 {
            queue.push_back(op(tag));
        }
        assert_eq!(queue.remove(irp(3)).map(|o| o.irp), Some(irp(3)));
        assert!(queue.remove(irp(3)).is_none());
        assert_eq!(queue.remove(irp(1)).map(|o| o.irp), Some(irp(1)));
        assert_eq!(tags(&mut queue), [irp(2), irp(4)]);
        assert_eq!(queue.remove(irp(2)).map(|o| o.irp), Some(irp(2)));
        assert_eq!(queue.remove(irp(4)).map(|o| o.irp), Some(irp(4)));
        assert!(queue.is_empty());
        queue.push_back(op(5));
        assert_eq!(tags(&mut queue), [irp(5)]);
    }
}
