//! Gathered writes shared by a core's connections. When a writer finds several frames queued
//! (the core is behind: frames arrive faster than its rounds of sends), it writes them as one
//! contiguous block. The subscribers of a channel fall behind together and by the same frames,
//! so the block one writer builds is usually the block the next hundred writers need: the core
//! keeps the last few blocks it built, keyed by the exact frames they hold (the same `Rc`s, in
//! the same order), and hands out clones. A run of frames is thus copied once per core, not
//! once per subscriber, as a message is serialized once and its bytes shared.
//!
//! perf at 4M deliveries/s (one channel × 1,000 subscribers) put the per-connection gather
//! copy and the growth of its buffer at 9 % of the core (BENCHMARKS.md, "Multi-frame writes joined once per core").
//!
//! Bound: `WAYS` blocks per core, each at most the writer's batch limit (256 KiB), plus the
//! frames their keys keep alive; a new block replaces the oldest.

use std::{
    cell::{Cell, RefCell},
    rc::Rc,
};

use bytes::Bytes;

use super::out_frame::OutFrame;

/// Blocks kept per core. A round of sends goes out in slices, and the writers of one slice
/// share one block; a few ways keep the block of the slice before while a new one is built.
const WAYS: usize = 4;

#[derive(Default)]
pub struct Gather {
    ways: RefCell<[Option<Way>; WAYS]>,
    /// The way the next new block replaces.
    next: Cell<usize>,
}

struct Way {
    frames: Vec<OutFrame>,
    block: OutFrame,
}

impl Gather {
    /// `frames` as one block: a clone of a kept block holding exactly these frames, or a new
    /// block (then kept in place of the oldest).
    pub fn block(&self, frames: &[OutFrame]) -> OutFrame {
        let mut ways = self.ways.borrow_mut();
        let same = |w: &Way| {
            w.frames.len() == frames.len()
                && w.frames.iter().zip(frames).all(|(a, b)| Rc::ptr_eq(a, b))
        };
        if let Some(w) = ways.iter().flatten().find(|w| same(w)) {
            return w.block.clone();
        }
        let mut bytes = Vec::with_capacity(frames.iter().map(|f| f.len()).sum());
        for f in frames {
            bytes.extend_from_slice(f);
        }
        let block = OutFrame::new(Bytes::from(bytes));
        let i = self.next.get();
        self.next.set((i + 1) % WAYS);
        match &mut ways[i] {
            Some(w) => {
                w.frames.clear();
                w.frames.extend_from_slice(frames);
                w.block = block.clone();
            }
            slot => {
                *slot = Some(Way {
                    frames: frames.to_vec(),
                    block: block.clone(),
                })
            }
        }
        block
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(s: &str) -> OutFrame {
        OutFrame::new(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn the_same_frames_share_one_block() {
        let g = Gather::default();
        let (a, b, c) = (frame("aa"), frame("b"), frame("ccc"));
        let one = g.block(&[a.clone(), b.clone(), c.clone()]);
        assert_eq!(&one[..], b"aabccc");
        let two = g.block(&[a.clone(), b.clone(), c.clone()]);
        assert!(Rc::ptr_eq(&one, &two), "a second writer reuses the block");
    }

    #[test]
    fn equal_bytes_in_other_frames_or_order_are_another_block() {
        let g = Gather::default();
        let (a, b) = (frame("x"), frame("x"));
        let ab = g.block(&[a.clone(), b.clone()]);
        let ba = g.block(&[b.clone(), a.clone()]);
        let a2 = g.block(&[a.clone(), a.clone()]);
        let abb = g.block(&[a.clone(), b.clone(), b.clone()]);
        assert!(!Rc::ptr_eq(&ab, &ba));
        assert!(!Rc::ptr_eq(&ab, &a2));
        assert_eq!(&abb[..], b"xxx");
        assert!(Rc::ptr_eq(&ab, &g.block(&[a, b])));
    }

    #[test]
    fn keeps_at_most_ways_blocks_and_replaces_the_oldest() {
        let g = Gather::default();
        let fs: Vec<OutFrame> = (0..=WAYS).map(|i| frame(&i.to_string())).collect();
        let first = g.block(&[fs[0].clone(), fs[0].clone()]);
        for f in &fs[1..WAYS] {
            g.block(&[f.clone(), f.clone()]);
        }
        assert!(Rc::ptr_eq(
            &first,
            &g.block(&[fs[0].clone(), fs[0].clone()])
        ));
        // One more distinct run replaces the oldest way, the first block's.
        g.block(&[fs[WAYS].clone(), fs[WAYS].clone()]);
        assert_eq!(g.ways.borrow().iter().flatten().count(), WAYS);
        let again = g.block(&[fs[0].clone(), fs[0].clone()]);
        assert!(!Rc::ptr_eq(&first, &again), "the first block was dropped");
        assert_eq!(&again[..], b"00");
        // The cache's references are all that is left of frames it no longer holds.
        assert_eq!(Rc::strong_count(&fs[1]), 1);
    }
}
