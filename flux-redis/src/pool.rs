//! The connections a store decides through.
//!
//! Up to `size` connections, made on the calling thread when a call needs
//! one and none is idle; a call that finds every one in use waits for one to
//! come back, until the caller's deadline. A connection that broke is dropped when it
//! comes back (connection.rs).
//!
//! The pool has no thread of its own and waits on `std::sync` only. A pool
//! with a thread pool of its own (r2d2's) keeps those threads parked in
//! parking_lot's process-wide table of waiting threads; a child forked then
//! inherits the table with entries for threads it does not have, which
//! corrupts it as soon as the child's own threads take their place (their
//! stacks are reused): the child hangs in parking_lot. Nothing of this pool
//! waits in that table, and a child makes a pool of its own (see
//! [`flux_core::fork`]).

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use thiserror::Error;

use crate::connection::{Conn, Manager};

pub(crate) struct Pool {
    manager: Arc<Manager>,
    size: u32,
    state: Mutex<State>,
    /// Signalled when a connection comes back, or a place for one frees up.
    returned: Condvar,
}

#[derive(Default)]
struct State {
    idle: Vec<Conn>,
    /// Connections handed out.
    in_use: u32,
    /// Connections being made by callers right now.
    connecting: u32,
    /// Whether the last connection made (or tried) came up: a call that
    /// waited in vain behind others connecting met back-pressure then, and
    /// a Redis failing else.
    last_connected: bool,
}

/// Why a call got no connection within the timeout.
#[derive(Debug, Error)]
pub(crate) enum PoolError {
    /// Every connection of the pool stayed in use.
    #[error("all connections stayed in use")]
    Busy,
    /// Connecting failed, or did not finish in time.
    #[error("could not connect: {0}")]
    Connect(#[source] redis::RedisError),
    /// The other calls were still connecting when the time was up, and the
    /// last connection tried (if any) did not come up.
    #[error("timed out waiting for a connection being made")]
    Waiting,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("size", &self.size).finish()
    }
}

impl Pool {
    /// An empty pool of up to `size` connections made by `manager`.
    pub(crate) fn new(manager: Arc<Manager>, size: u32) -> Pool {
        Pool {
            manager,
            size,
            state: Mutex::new(State::default()),
            returned: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An idle connection, a new one, or the first to come back before
    /// `deadline`.
    pub(crate) fn get(&self, deadline: Instant) -> Result<Pooled<'_>, PoolError> {
        let mut state = self.lock();
        loop {
            if let Some(conn) = state.idle.pop() {
                state.in_use += 1;
                return Ok(self.hand_out(conn));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(if state.in_use > 0 || state.last_connected {
                    PoolError::Busy
                } else {
                    PoolError::Waiting
                });
            }
            if state.in_use + state.connecting < self.size {
                state.connecting += 1;
                drop(state);
                let made = self.manager.connect(deadline - now);
                let mut state = self.lock();
                state.connecting -= 1;
                state.last_connected = made.is_ok();
                return match made {
                    Ok(conn) => {
                        state.in_use += 1;
                        Ok(self.hand_out(conn))
                    }
                    Err(err) => {
                        drop(state);
                        // Its place is free: a waiting call may try.
                        self.returned.notify_one();
                        Err(PoolError::Connect(err))
                    }
                };
            }
            state = self
                .returned
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn hand_out(&self, conn: Conn) -> Pooled<'_> {
        Pooled {
            pool: self,
            conn: Some(conn),
        }
    }
}

/// A connection out of the pool; back in it (or dropped, if broken) when
/// this goes.
pub(crate) struct Pooled<'a> {
    pool: &'a Pool,
    conn: Option<Conn>,
}

impl Deref for Pooled<'_> {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        self.conn.as_ref().expect("present until dropped")
    }
}

impl DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Conn {
        self.conn.as_mut().expect("present until dropped")
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        let broken = self.pool.manager.has_broken(&conn);
        let mut state = self.pool.lock();
        state.in_use -= 1;
        let closing = if broken {
            Some(conn)
        } else {
            state.idle.push(conn);
            None
        };
        drop(state);
        self.pool.returned.notify_one();
        // Closed without the lock held.
        drop(closing);
    }
}
