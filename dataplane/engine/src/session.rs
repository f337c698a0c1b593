//! Runs one transfer endpoint (a [`dwcp_transfer::Sender`] or [`dwcp_transfer::Receiver`])
//! on a pinned dataplane worker.
//!
//! Owns: the glue between the I/O-free transfer engine and the worker loop — received
//! datagrams go to `handle_frame`, timers to `handle_timeout`, and `poll_transmit_into`
//! writes each datagram straight into a slot of the worker's tx batch (a GSO buffer or a
//! UMEM frame); when the batch has no room the engine is not asked, so backpressure never
//! loses a frame. The clock is read once per batch, not per frame. Progress is published to a [`Progress`] handle that
//! other threads read (CLI progress bar, JSON report, control-plane stats).
//!
//! Does not: choose the backend or pin threads (the worker does), parse DWCP itself (the
//! transfer engine validates every frame, CRC included), or spread one object over several
//! workers: one transfer runs on one worker, and its streams share that worker's queue.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dwcp_transfer::{Receiver, ReceiverStats, Sender, SenderStats};

use crate::io::TxBatch;
use crate::worker::{Handler, RxFrames};

/// An endpoint the worker can drive.
pub trait Endpoint: Send + 'static {
    /// Stats snapshot type.
    type Stats: Clone + Send + std::fmt::Debug + 'static;
    /// A datagram arrived.
    fn handle_frame(&mut self, now: Instant, datagram: &[u8]);
    /// Writes the next datagram to send now, if any, into `buf`; returns its length.
    fn poll_transmit_into(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize>;
    /// When `handle_timeout` must next be called.
    fn poll_timeout(&mut self) -> Option<Instant>;
    /// Timers fired.
    fn handle_timeout(&mut self, now: Instant);
    /// Finished (complete or failed).
    fn finished(&self) -> bool;
    /// Why it failed, if it did.
    fn failure(&self) -> Option<Failure>;
    /// Stats snapshot.
    fn stats(&self) -> Self::Stats;
}

impl Endpoint for Sender {
    type Stats = SenderStats;
    fn handle_frame(&mut self, now: Instant, datagram: &[u8]) {
        Sender::handle_frame(self, now, datagram);
    }
    fn poll_transmit_into(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        Sender::poll_transmit_into(self, now, buf)
    }
    fn poll_timeout(&mut self) -> Option<Instant> {
        Sender::poll_timeout(self)
    }
    fn handle_timeout(&mut self, now: Instant) {
        Sender::handle_timeout(self, now);
    }
    fn finished(&self) -> bool {
        self.is_complete() || self.error().is_some()
    }
    fn failure(&self) -> Option<Failure> {
        self.error().map(Failure::of)
    }
    fn stats(&self) -> SenderStats {
        Sender::stats(self)
    }
}

impl Endpoint for Receiver {
    type Stats = ReceiverStats;
    fn handle_frame(&mut self, now: Instant, datagram: &[u8]) {
        Receiver::handle_frame(self, now, datagram);
    }
    fn poll_transmit_into(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        Receiver::poll_transmit_into(self, now, buf)
    }
    fn poll_timeout(&mut self) -> Option<Instant> {
        Receiver::poll_timeout(self)
    }
    fn handle_timeout(&mut self, now: Instant) {
        Receiver::handle_timeout(self, now);
    }
    fn finished(&self) -> bool {
        self.is_complete() || self.error().is_some()
    }
    fn failure(&self) -> Option<Failure> {
        self.error().map(Failure::of)
    }
    fn stats(&self) -> ReceiverStats {
        Receiver::stats(self)
    }
}

/// Why an endpoint failed: the error chain for people, its class for code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// "outer: inner: innermost".
    pub chain: String,
    /// An authentication or sealing-policy failure
    /// ([`dwcp_transfer::TransferError::is_authentication`]).
    pub authentication: bool,
}

impl Failure {
    /// The failure of a transfer error.
    pub fn of(e: &dwcp_transfer::TransferError) -> Self {
        Self {
            chain: crate::io::error_chain(e),
            authentication: e.is_authentication(),
        }
    }
}

/// What a running endpoint last published.
#[derive(Debug, Clone)]
pub struct Snapshot<S> {
    /// Endpoint stats.
    pub stats: S,
    /// Finished (complete or failed).
    pub finished: bool,
    /// Failure, if any.
    pub failure: Option<Failure>,
    /// CPU time of the worker thread running the endpoint, ns, when this snapshot was
    /// taken (one clock read per snapshot, not per frame).
    pub cpu_ns: u64,
}

/// Shared, periodically refreshed view of an endpoint.
#[derive(Debug)]
pub struct Progress<S> {
    inner: Mutex<Option<Snapshot<S>>>,
}

impl<S: Clone> Progress<S> {
    /// The latest snapshot (None before the endpoint first ran).
    pub fn get(&self) -> Option<Snapshot<S>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A worker [`Handler`] that drives one endpoint.
#[derive(Debug)]
pub struct EndpointHandler<E: Endpoint> {
    ep: Option<E>,
    progress: Arc<Progress<E::Stats>>,
    last_publish: Option<Instant>,
    publish_every: Duration,
    done: bool,
}

impl<E: Endpoint> EndpointHandler<E> {
    /// Wraps `ep`; returns the handler and the progress handle.
    pub fn new(ep: E) -> (Self, Arc<Progress<E::Stats>>) {
        let progress = Arc::new(Progress {
            inner: Mutex::new(None),
        });
        (
            Self {
                ep: Some(ep),
                progress: progress.clone(),
                last_publish: None,
                publish_every: Duration::from_millis(50),
                done: false,
            },
            progress,
        )
    }

    /// An idle handler (for workers that carry no transfer).
    pub fn idle() -> Self {
        Self {
            ep: None,
            progress: Arc::new(Progress {
                inner: Mutex::new(None),
            }),
            last_publish: None,
            publish_every: Duration::from_millis(50),
            done: true,
        }
    }

    /// The endpoint, once the worker returned the handler.
    pub fn into_endpoint(self) -> Option<E> {
        self.ep
    }

    fn publish(&mut self, now: Instant, force: bool) {
        let Some(ep) = &self.ep else { return };
        if !force
            && self
                .last_publish
                .is_some_and(|t| now - t < self.publish_every)
        {
            return;
        }
        self.last_publish = Some(now);
        let snap = Snapshot {
            stats: ep.stats(),
            finished: ep.finished(),
            failure: ep.failure(),
            cpu_ns: crate::worker::thread_cpu_ns(),
        };
        *self
            .progress
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(snap);
    }

    fn fill(&mut self, now: Instant, tx: &mut TxBatch<'_>) {
        let Some(ep) = &mut self.ep else { return };
        if ep.poll_timeout().is_some_and(|t| t <= now) {
            ep.handle_timeout(now);
        }
        let max = tx.max_datagram();
        // until the engine has nothing more to send now, or the batch has no room left (then
        // the engine is not asked, so it keeps what it would have sent)
        while tx.try_push_with(max, |buf| ep.poll_transmit_into(now, buf)) == Some(true) {}
    }
}

impl<E: Endpoint> Handler for EndpointHandler<E> {
    fn on_rx(&mut self, frames: RxFrames<'_, '_>, _tx: &mut TxBatch<'_>) {
        let Some(ep) = &mut self.ep else { return };
        let now = Instant::now();
        frames.for_each_raw(|d| ep.handle_frame(now, d));
    }

    fn poll_tx(&mut self, tx: &mut TxBatch<'_>) {
        let now = Instant::now();
        self.fill(now, tx);
        let finished = self.ep.as_ref().is_some_and(Endpoint::finished);
        if finished && !self.done {
            // Publish the final state at once; the endpoint keeps answering (a receiver
            // re-sends its CLOSE when the sender missed it) until the caller stops the worker.
            self.publish(now, true);
            self.done = true;
        } else {
            self.publish(now, false);
        }
    }

    fn next_wakeup(&mut self) -> Option<Instant> {
        self.ep.as_mut().and_then(|e| e.poll_timeout())
    }
}
