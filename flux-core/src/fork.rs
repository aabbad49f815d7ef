//! Life across `fork(2)`: what a child process may use of what its parent
//! made.
//!
//! A forked child has a copy of its parent's memory but only the thread that
//! called `fork`. Every socket it inherited is shared with the parent (a
//! reply read by one is lost to the other), every thread it inherited is
//! gone, and any lock another thread held at that moment stays held. So the
//! parts of a store that own sockets, threads or long-held locks (the Redis
//! pool, the analytics flusher and its connection, the C ABI's async thread)
//! are kept in a [`PerProcess`]: a child that uses one makes its own at
//! first use, and the inherited one is forgotten, never used and never
//! dropped, since dropping it would close, write to or join what belongs to
//! the parent.
//!
//! A child knows it is one by the process generation: [`child_started`]
//! bumps it, and it must be called in the child right after `fork`. The C
//! ABI (flux-ffi) does this itself through `pthread_atfork`; a Rust program
//! that forks while it holds stores calls it in the child (in a
//! `pthread_atfork` child handler, or first thing after `fork` returns 0).
//! Checking the generation is one relaxed atomic load: no system call on
//! the way of a decision.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// How many forks lie between the process that loaded this library and
/// this one.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Tells the library that this process is a new child of the one whose
/// memory it copied. Call it in the child right after `fork`, before any
/// other thread exists; it only bumps a counter, so it is safe in a
/// `pthread_atfork` child handler.
pub fn child_started() {
    GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// The current process generation: changes in a child at [`child_started`].
pub fn generation() -> u64 {
    GENERATION.load(Ordering::Relaxed)
}

/// A value each process has its own of: made by the process that creates
/// the `PerProcess`, and again by each forked child at its first
/// [`PerProcess::get_or_init`].
///
/// What a child inherited is never used and never dropped: it holds the
/// parent's sockets and threads. Dropping a `PerProcess` drops only the
/// value this process made; the inherited ones are forgotten (their memory
/// is the child's copy of its parent's, and goes with the child).
pub struct PerProcess<T> {
    head: Node<T>,
}

/// One process's value, and the value of a child forked from it. The chain
/// is as long as the number of forks between the creator and this process.
struct Node<T> {
    generation: u64,
    /// `None` only while being dropped.
    value: Option<T>,
    next: OnceLock<Box<Node<T>>>,
}

impl<T> PerProcess<T> {
    /// `value` belongs to the calling process.
    pub fn new(value: T) -> Self {
        PerProcess {
            head: Node::new(value),
        }
    }

    /// This process's value, made by `make` if this is its first use here.
    ///
    /// Outside a forked child this is one atomic load and a comparison.
    pub fn get_or_init(&self, make: impl FnOnce() -> T) -> &T {
        let now = generation();
        let mut node = &self.head;
        let mut make = Some(make);
        loop {
            if node.generation == now {
                return node.value.as_ref().expect("only None while dropped");
            }
            // A generation is never smaller than an ancestor's: the next
            // node is this process's, or a later ancestor's.
            node = node.next.get_or_init(|| {
                let make = make.take().expect("made once");
                Box::new(Node::new(make()))
            });
        }
    }

    /// This process's value if it has made one: `None` in a forked child
    /// that has not used it yet.
    pub fn get(&self) -> Option<&T> {
        let now = generation();
        let mut node = &self.head;
        loop {
            if node.generation == now {
                return node.value.as_ref();
            }
            node = node.next.get()?;
        }
    }
}

impl<T> Node<T> {
    fn new(value: T) -> Self {
        Node {
            generation: generation(),
            value: Some(value),
            next: OnceLock::new(),
        }
    }
}

impl<T> Drop for Node<T> {
    fn drop(&mut self) {
        if self.generation != generation() {
            // An ancestor's: its sockets, threads and locks are not ours to
            // close, join or take.
            std::mem::forget(self.value.take());
        }
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for PerProcess<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerProcess")
            .field("this_process", &self.get())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    /// Counts its drops.
    struct Tracked(Arc<AtomicUsize>);
    impl Drop for Tracked {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    // One test, as it moves the process-wide generation: a second test in
    // parallel would see it change under its feet.
    #[test]
    fn a_child_makes_its_own_value_and_never_drops_the_inherited_one() {
        let drops = Arc::new(AtomicUsize::new(0));
        let cell = PerProcess::new(Tracked(drops.clone()));
        let made = AtomicUsize::new(0);
        let make = || {
            made.fetch_add(1, Ordering::SeqCst);
            Tracked(drops.clone())
        };
        let first: *const Tracked = cell.get_or_init(make);
        assert_eq!(
            made.load(Ordering::SeqCst),
            0,
            "the creator's value is used"
        );
        assert!(cell.get().is_some());

        child_started();
        assert!(cell.get().is_none(), "nothing of its own yet in the child");
        let second: *const Tracked = cell.get_or_init(make);
        assert_ne!(first, second);
        assert_eq!(made.load(Ordering::SeqCst), 1);
        assert_eq!(cell.get_or_init(make) as *const Tracked, second);

        child_started();
        cell.get_or_init(make);
        assert_eq!(
            made.load(Ordering::SeqCst),
            2,
            "a grandchild makes its own too"
        );

        drop(cell);
        assert_eq!(
            drops.load(Ordering::SeqCst),
            1,
            "only this process's value is dropped"
        );
    }
}
