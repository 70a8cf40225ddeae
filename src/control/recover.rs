//! Recovery reads (`ControlMsg::Recover`): the history a recovering subscriber missed, read
//! through the engine and encoded once per read.
//!
//! Reads of the same range are shared. Many subscribers that come back to the same position
//! (a node restart, a network blip) ask for the same pages: a read asked while the same one is
//! in flight waits for it, and a finished read is kept for `KEEP`, so they cost one engine read
//! and one encoding between them. A kept page stays right: it was read after every message up
//! to its end was stored (the asking core had them routed to it, see `core::recovery`), and
//! stored messages do not change; one trimmed meanwhile may still be sent, which is harmless.
//!
//! Bounds: at most `READS` engine reads at once (more wait their turn, each a subscribe
//! waiting for its answer); kept pages at most `KEEP_BYTES` of frames (the oldest go first;
//! a larger page is not kept) and `KEEP_PAGES` pages.

use std::{
    cell::RefCell,
    collections::{HashMap, VecDeque},
    rc::Rc,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::{Semaphore, oneshot};

use super::msg::{self, Delivery, RecoverReq, Recovered};
use crate::{
    channel::ChannelName,
    engine::{Engine, EngineError, LocalFuture, Range},
    metrics::ControlMetrics,
};

/// Engine reads at once.
const READS: usize = 64;
/// How long a finished read is kept for others asking for the same range.
const KEEP: Duration = Duration::from_secs(2);
/// Frame bytes kept, all pages together.
const KEEP_BYTES: usize = 64 << 20;
/// Pages kept.
const KEEP_PAGES: usize = 1024;

type Key = (ChannelName, u64, u64);
type Reply = oneshot::Sender<Result<Arc<Recovered>, String>>;

enum Entry {
    InFlight(Vec<Reply>),
    Ready {
        at: Instant,
        page: Arc<Recovered>,
        bytes: usize,
    },
}

#[derive(Default)]
struct Pages {
    entries: HashMap<Key, Entry>,
    /// Ready pages, oldest first (eviction order).
    order: VecDeque<(Instant, Key)>,
    bytes: usize,
}

impl Pages {
    fn evict(&mut self, now: Instant) {
        while let Some((at, key)) = self.order.front().cloned() {
            let stale = now.duration_since(at) >= KEEP;
            if !stale && self.bytes <= KEEP_BYTES && self.order.len() <= KEEP_PAGES {
                break;
            }
            self.order.pop_front();
            if let Some(Entry::Ready { at: a, bytes, .. }) = self.entries.get(&key)
                && *a == at
            {
                self.bytes -= bytes;
                self.entries.remove(&key);
            }
        }
    }
}

/// The control thread's recovery reads (shared with their tasks: one thread, `Rc`).
pub(super) struct RecoveryReads {
    pages: Rc<RefCell<Pages>>,
    slots: Arc<Semaphore>,
}

impl RecoveryReads {
    pub(super) fn new() -> Self {
        Self {
            pages: Rc::default(),
            slots: Arc::new(Semaphore::new(READS)),
        }
    }

    /// Answers `r` from a kept or in-flight read of its range, or starts one. The engine's
    /// range is taken now (the memory engine reads it here: everything stored before this
    /// request is in it).
    pub(super) fn ask<E: Engine>(&self, engine: &mut E, r: RecoverReq, m: &ControlMetrics) {
        let RecoverReq {
            channel,
            after,
            upto,
            reply,
        } = r;
        let key = (channel.clone(), after, upto);
        let now = Instant::now();
        {
            let mut pages = self.pages.borrow_mut();
            pages.evict(now);
            match pages.entries.get_mut(&key) {
                Some(Entry::Ready { page, .. }) => {
                    m.recovery_reads_shared_total.inc();
                    let _ = reply.send(Ok(page.clone()));
                    return;
                }
                Some(Entry::InFlight(waiting)) => {
                    m.recovery_reads_shared_total.inc();
                    waiting.push(reply);
                    return;
                }
                None => {
                    m.recovery_reads_total.inc();
                    pages
                        .entries
                        .insert(key.clone(), Entry::InFlight(vec![reply]));
                }
            }
        }
        let read = engine.range(&channel, after, upto);
        let (pages, slots) = (self.pages.clone(), self.slots.clone());
        tokio::task::spawn_local(async move {
            let out = read_page(read, &channel, slots).await;
            let mut p = pages.borrow_mut();
            let Some(Entry::InFlight(waiting)) = p.entries.remove(&key) else {
                return;
            };
            if let Ok(page) = &out {
                let bytes: usize = page.msgs.iter().map(|d| d.frame.len()).sum();
                // An empty range (a subscriber that is not recovering) says where the
                // channel starts now: not kept.
                if after < upto && bytes <= KEEP_BYTES {
                    let at = Instant::now();
                    p.bytes += bytes;
                    p.order.push_back((at, key.clone()));
                    p.entries.insert(
                        key,
                        Entry::Ready {
                            at,
                            page: page.clone(),
                            bytes,
                        },
                    );
                    p.evict(at);
                }
            }
            drop(p);
            for w in waiting {
                let _ = w.send(out.clone());
            }
        });
    }
}

/// Runs one engine read (in its turn) and encodes its messages once.
async fn read_page(
    read: LocalFuture<Result<Range, EngineError>>,
    channel: &ChannelName,
    slots: Arc<Semaphore>,
) -> Result<Arc<Recovered>, String> {
    let _slot = slots.acquire_owned().await;
    let range = read.await.map_err(|e| e.to_string())?;
    let msgs = range
        .records
        .iter()
        .map(|m| {
            Arc::new(Delivery::encoded(
                channel.clone(),
                m.offset,
                &msg::frame_json_of(m),
                // Recovery is a raw-protocol feature: Socket.IO clients never ask for it.
                false,
            ))
        })
        .collect();
    Ok(Arc::new(Recovered {
        first: range.first,
        msgs,
    }))
}
