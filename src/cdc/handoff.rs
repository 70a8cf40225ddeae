//! Hands changes to the publish path every client publish takes, and reports what became of
//! each: with the memory engine to the core that owns each change's channel (which sequences,
//! delivers and stores it like a client publish), with the redis engine to the control thread
//! (which appends it to Redis with its stream position).
//!
//! Runs on the change-stream thread; its waits are that thread's backpressure and never
//! block a core. Memory engine: before a batch is sent, the stream reserves every queue slot
//! its changes will use (the control thread's queue and the other cores' inboxes: it may wait
//! for them, a core may not), so the owner core never refuses a change, and several batches
//! can be in flight at once without reordering (`Route::window`). Redis engine: one batch at
//! a time; one refused as busy (nothing accepted) is handed again after a pause. A store that
//! failed (Redis) may or may not have kept a change: that is not retried here but ends the
//! session (`Failed`), which resumes from the checkpoint and skips what the store says it has.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::{
    control::{ControlMsg, CoreMsg, SourceBatch, SourceMsg, SourceResult, SourceSlots},
    core::sequencer::owner_of,
};

/// Where changes enter the publish path.
#[derive(Clone)]
pub enum Route {
    /// Memory engine: every core's inbox (index = core id), and the control thread's queue
    /// (where the owner core stores each change) for the slots reserved with a batch.
    Cores {
        cores: Vec<mpsc::Sender<CoreMsg>>,
        control: mpsc::Sender<ControlMsg>,
        /// The smallest of those queues' bounds: the slots held at once stay well under it.
        queue: usize,
    },
    /// Redis engine: the control thread.
    Control(mpsc::Sender<ControlMsg>),
}

#[derive(Debug, thiserror::Error)]
pub enum HandError {
    /// The node is shutting down: the publish path is gone.
    #[error("the publish path is closed (shutting down)")]
    Closed,
    /// The store failed; what it kept is unknown until it is read again.
    #[error("changes could not be stored: {0}")]
    Failed(String),
}

/// What one hand-off of a batch achieved.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Indices (into the batch) of the changes that were stored and delivered.
    pub published: Vec<usize>,
    /// Indices of the changes whose `db:` channel is not enabled (not stored).
    pub no_channel: Vec<usize>,
}

/// A batch handed over, its results not read yet.
pub struct InFlight {
    pub msgs: Vec<SourceMsg>,
    /// Per receiving thread: the batch indices it got, and its answer.
    waits: Vec<(Vec<usize>, oneshot::Receiver<Vec<SourceResult>>)>,
}

/// Pause after a busy refusal (redis engine): 1 ms, doubling to 100 ms.
const BUSY_PAUSE: (Duration, Duration) = (Duration::from_millis(1), Duration::from_millis(100));
/// Most changes in one batch.
pub const MAX_BATCH: usize = 512;
/// Most batches in flight at once (memory engine). Batches are often one change (a change is
/// sent as soon as the stream has nothing more ready), so this is large: a stream that
/// waited for a core's answer after a few small batches would delay the changes behind them.
const MAX_WINDOW: usize = 64;

/// How much may be in flight at once.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub batches: usize,
    /// Changes, and so slots held in each queue.
    pub changes: usize,
}

impl Route {
    /// Changes per batch: at most `MAX_BATCH`, and at most a quarter of the smallest queue the
    /// batch reserves slots in (so reserving can never wait on slots the stream holds itself).
    pub fn batch(&self) -> usize {
        match self {
            Self::Cores { queue, .. } => (queue / 4).clamp(1, MAX_BATCH),
            Self::Control(_) => MAX_BATCH,
        }
    }

    /// What may be in flight at once: memory engine, up to `MAX_WINDOW` batches holding
    /// under half of each queue's slots; redis, one batch.
    pub fn window(&self) -> Window {
        match self {
            Self::Cores { queue, .. } => Window {
                batches: MAX_WINDOW,
                changes: (queue / 2).max(self.batch()),
            },
            Self::Control(_) => Window {
                batches: 1,
                changes: MAX_BATCH,
            },
        }
    }

    /// Hands `msgs` (stream order) over; `InFlight::wait` reads the results.
    pub async fn send(&self, msgs: Vec<SourceMsg>) -> Result<InFlight, HandError> {
        let waits = self.once(&msgs).await?;
        Ok(InFlight { msgs, waits })
    }

    /// One hand-off of `msgs`: per receiving thread, the indices it got and its answer.
    async fn once(
        &self,
        msgs: &[SourceMsg],
    ) -> Result<Vec<(Vec<usize>, oneshot::Receiver<Vec<SourceResult>>)>, HandError> {
        match self {
            Self::Control(tx) => {
                let (reply, rx) = oneshot::channel();
                let batch = SourceBatch {
                    msgs: msgs.to_vec(),
                    slots: Vec::new(),
                    reply,
                };
                tx.send(ControlMsg::Source(batch))
                    .await
                    .map_err(|_| HandError::Closed)?;
                Ok(vec![((0..msgs.len()).collect(), rx)])
            }
            Self::Cores { cores, control, .. } => {
                // One batch per owner core, each in stream order, with its slots.
                let mut per: Vec<(Vec<usize>, Vec<SourceMsg>, Vec<SourceSlots>)> =
                    (0..cores.len()).map(|_| Default::default()).collect();
                for (i, m) in msgs.iter().enumerate() {
                    let o = owner_of(&m.channel, cores.len());
                    let slots = reserve(cores, control, o).await?;
                    per[o].0.push(i);
                    per[o].1.push(m.clone());
                    per[o].2.push(slots);
                }
                let mut waits = Vec::new();
                for (core, (idx, msgs, slots)) in cores.iter().zip(per) {
                    if msgs.is_empty() {
                        continue;
                    }
                    let (reply, rx) = oneshot::channel();
                    let batch = SourceBatch { msgs, slots, reply };
                    core.send(CoreMsg::Source(batch))
                        .await
                        .map_err(|_| HandError::Closed)?;
                    waits.push((idx, rx));
                }
                Ok(waits)
            }
        }
    }
}

/// The slots one change owned by core `owner` uses.
async fn reserve(
    cores: &[mpsc::Sender<CoreMsg>],
    control: &mpsc::Sender<ControlMsg>,
    owner: usize,
) -> Result<SourceSlots, HandError> {
    let store = control
        .clone()
        .reserve_owned()
        .await
        .map_err(|_| HandError::Closed)?;
    let mut peers = Vec::with_capacity(cores.len());
    for (i, c) in cores.iter().enumerate() {
        peers.push(if i == owner {
            None
        } else {
            Some(
                c.clone()
                    .reserve_owned()
                    .await
                    .map_err(|_| HandError::Closed)?,
            )
        });
    }
    Ok(SourceSlots { store, peers })
}

impl InFlight {
    /// Waits for every result; hands busy refusals again (redis engine) until every change is
    /// published or skipped.
    pub async fn wait(self, route: Route) -> Result<(Vec<SourceMsg>, Outcome), HandError> {
        let InFlight { msgs, mut waits } = self;
        let mut out = Outcome::default();
        let mut pause = BUSY_PAUSE.0;
        loop {
            let mut again = Vec::new();
            for (idx, rx) in waits {
                let results = rx.await.map_err(|_| HandError::Closed)?;
                for (i, r) in idx.into_iter().zip(results) {
                    match r {
                        SourceResult::Published => out.published.push(i),
                        SourceResult::NoChannel => out.no_channel.push(i),
                        SourceResult::Busy => again.push(i),
                        SourceResult::Failed(e) => return Err(HandError::Failed(e)),
                    }
                }
            }
            if again.is_empty() {
                return Ok((msgs, out));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(BUSY_PAUSE.1);
            let retry: Vec<SourceMsg> = again.iter().map(|&i| msgs[i].clone()).collect();
            waits = route
                .once(&retry)
                .await?
                .into_iter()
                .map(|(idx, rx)| (idx.into_iter().map(|j| again[j]).collect(), rx))
                .collect();
        }
    }
}
