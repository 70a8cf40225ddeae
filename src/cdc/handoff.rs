//! Hands changes to the publish path every client publish takes, and waits for what became of
//! each: with the memory engine to the core that owns each change's channel (which sequences,
//! delivers and stores it like a client publish), with the redis engine to the control thread
//! (which appends it to Redis with its stream position).
//!
//! Runs on the change-stream thread; its waits (`send().await` on a full inbox, the replies)
//! are that thread's backpressure and never block a core. Changes refused as busy (nothing
//! was accepted) are handed again after a pause; a published one never is. Order per channel
//! holds: a channel's changes all go to one owner core (memory), which refuses every change
//! after the first it refuses, and the control thread refuses a batch whole when it is busy
//! (redis). A store that failed (Redis) may or may not have stored the change: that is not
//! retried here but ends the session (`Failed`), which resumes from the checkpoint and skips
//! what the store says it has.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::{
    control::{ControlMsg, CoreMsg, SourceBatch, SourceMsg, SourceResult},
    core::sequencer::owner_of,
};

/// Where changes enter the publish path.
#[derive(Clone)]
pub enum Route {
    /// Memory engine: every core's inbox (index = core id).
    Cores(Vec<mpsc::Sender<CoreMsg>>),
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

/// Pause after a busy refusal: 1 ms, doubling to 100 ms.
const BUSY_PAUSE: (Duration, Duration) = (Duration::from_millis(1), Duration::from_millis(100));

impl Route {
    /// Hands `msgs` (stream order) over until every one is published or skipped.
    pub async fn hand(&self, msgs: &[SourceMsg]) -> Result<Outcome, HandError> {
        let mut out = Outcome::default();
        let mut todo: Vec<usize> = (0..msgs.len()).collect();
        let mut pause = BUSY_PAUSE.0;
        while !todo.is_empty() {
            let batch: Vec<SourceMsg> = todo.iter().map(|&i| msgs[i].clone()).collect();
            let results = self.once(batch).await?;
            let mut again = Vec::new();
            for (&i, r) in todo.iter().zip(results) {
                match r {
                    SourceResult::Published => out.published.push(i),
                    SourceResult::NoChannel => out.no_channel.push(i),
                    SourceResult::Busy => again.push(i),
                    SourceResult::Failed(e) => return Err(HandError::Failed(e)),
                }
            }
            if again.is_empty() {
                break;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(BUSY_PAUSE.1);
            todo = again;
        }
        Ok(out)
    }

    /// One hand-off: one result per change, in order.
    async fn once(&self, msgs: Vec<SourceMsg>) -> Result<Vec<SourceResult>, HandError> {
        match self {
            Self::Control(tx) => {
                let (reply, rx) = oneshot::channel();
                tx.send(ControlMsg::Source(SourceBatch { msgs, reply }))
                    .await
                    .map_err(|_| HandError::Closed)?;
                rx.await.map_err(|_| HandError::Closed)
            }
            Self::Cores(cores) => {
                // One batch per owner core, each in stream order; results put back in order.
                let n = msgs.len();
                let mut per: Vec<(Vec<usize>, Vec<SourceMsg>)> =
                    (0..cores.len()).map(|_| Default::default()).collect();
                for (i, m) in msgs.into_iter().enumerate() {
                    let o = owner_of(&m.channel, cores.len());
                    per[o].0.push(i);
                    per[o].1.push(m);
                }
                let mut waits = Vec::new();
                for (core, (idx, msgs)) in cores.iter().zip(per) {
                    if msgs.is_empty() {
                        continue;
                    }
                    let (reply, rx) = oneshot::channel();
                    core.send(CoreMsg::Source(SourceBatch { msgs, reply }))
                        .await
                        .map_err(|_| HandError::Closed)?;
                    waits.push((idx, rx));
                }
                let mut results = vec![SourceResult::Busy; n];
                for (idx, rx) in waits {
                    for (i, r) in idx
                        .into_iter()
                        .zip(rx.await.map_err(|_| HandError::Closed)?)
                    {
                        results[i] = r;
                    }
                }
                Ok(results)
            }
        }
    }
}
