//! Starts one `ringcast-core-{i}` thread: builds its monoio runtime (io_uring, or the legacy
//! driver as configured or as fallback, logged), then runs the core: accept loop, inbox,
//! sweeper, and graceful close on shutdown.

use std::{rc::Rc, sync::Arc, time::Instant};

use monoio::{IoUringDriver, LegacyDriver, RuntimeBuilder};
use tokio::sync::{mpsc, watch};
use tungstenite::protocol::frame::coding::CloseCode;

use crate::{
    channel::ChannelTable,
    config::DriverKind,
    control::{ControlMsg, CoreMsg},
    core::{
        Core, NodeShared,
        conn::{Conn, Phase},
        inbox, send_gate,
    },
    protocol::{ChannelPosition, ServerMsg},
};

pub struct CoreStart {
    pub id: usize,
    pub shared: Arc<NodeShared>,
    pub listener: std::net::TcpListener,
    pub table: Arc<ChannelTable>,
    /// The policies in force at start (the control thread's: saved at run time, or configured).
    pub policies: Arc<crate::policy::PolicySet>,
    pub control: mpsc::Sender<ControlMsg>,
    /// Every core's inbox (index = core id), for forwarded publishes and deliveries.
    pub peers: Vec<mpsc::Sender<CoreMsg>>,
    pub inbox: mpsc::Receiver<CoreMsg>,
    pub shutdown: watch::Receiver<bool>,
    /// Reports the driver in use, or why the core could not start.
    pub ready: std::sync::mpsc::Sender<Result<&'static str, String>>,
}

pub fn spawn(s: CoreStart) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("ringcast-core-{}", s.id))
        .spawn(move || run(s))
}

fn run(s: CoreStart) {
    let cfg = &s.shared.config;
    let entries = cfg.io_uring_entries;
    let try_uring = matches!(cfg.driver, DriverKind::Auto | DriverKind::IoUring);
    if try_uring {
        match RuntimeBuilder::<IoUringDriver>::new()
            .with_entries(entries)
            .enable_timer()
            .build()
        {
            Ok(mut rt) => return rt.block_on(core_main(s, "io_uring")),
            Err(e) if cfg.driver == DriverKind::IoUring => {
                let _ = s.ready.send(Err(format!("io_uring unavailable: {e}")));
                return;
            }
            Err(e) => tracing::warn!(
                core = s.id,
                error = %e,
                "io_uring unavailable (RLIMIT_MEMLOCK or kernel); falling back to the legacy driver"
            ),
        }
    }
    match RuntimeBuilder::<LegacyDriver>::new()
        .with_entries(entries)
        .enable_timer()
        .build()
    {
        Ok(mut rt) => rt.block_on(core_main(s, "legacy")),
        Err(e) => {
            let _ = s.ready.send(Err(format!("legacy driver: {e}")));
        }
    }
}

async fn core_main(s: CoreStart, driver: &'static str) {
    let listener = match monoio::net::TcpListener::from_std(s.listener) {
        Ok(l) => l,
        Err(e) => {
            let _ = s.ready.send(Err(format!("listener: {e}")));
            return;
        }
    };
    let core = Rc::new(Core::new(
        s.id,
        s.shared.clone(),
        s.table,
        s.policies,
        s.control,
        s.peers,
    ));
    monoio::spawn(inbox::run_inbox(core.clone(), s.inbox));
    monoio::spawn(inbox::run_sweeper(core.clone()));
    monoio::spawn(run_send_gate(core.clone()));
    tracing::info!(core = s.id, driver, "core started");
    let _ = s.ready.send(Ok(driver));
    let mut shutdown = s.shutdown;
    loop {
        monoio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    monoio::spawn(crate::serve::serve(core.clone(), stream));
                }
                Err(e) => {
                    tracing::warn!(core = s.id, error = %e, "accept failed");
                    monoio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            },
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    drain(&core).await;
}

/// `{"type":"reconnect","channels":{name:{offset,epoch}}}` for a connection with
/// subscriptions: the last offset queued to it in each channel (the close that follows is
/// queued behind everything, so it is what the client will have read).
fn reconnect_frame(core: &Core, c: &Conn) -> Option<bytes::Bytes> {
    let subs = c.subs.borrow();
    if subs.is_empty() {
        return None;
    }
    let idx = core.index.borrow();
    let channels: std::collections::BTreeMap<&str, ChannelPosition<'_>> = subs
        .channels()
        .filter_map(|ch| {
            let e = idx.get(ch)?;
            Some((
                ch.as_str(),
                ChannelPosition {
                    offset: e.sent_to(c.id),
                    epoch: &e.epoch,
                },
            ))
        })
        .collect();
    Some(crate::frame::encode_json(&ServerMsg::Reconnect {
        channels,
    }))
}

/// Ticks the send gate while writers wait for it, so that writes stuck on peers that stopped
/// reading cannot hold the gate (see `core::send_gate`). Sleeps while nobody waits.
async fn run_send_gate(core: Rc<Core>) {
    loop {
        core.send_gate.wait_for_waiters().await;
        loop {
            monoio::time::sleep(send_gate::TICK).await;
            let (forgiven, waiting) = core.send_gate.tick();
            core.metrics().send_gate_forgiven_total.add(forgiven as u64);
            if !waiting {
                break;
            }
        }
    }
}

/// Graceful close: WebSockets are told where they stand in each subscribed channel
/// (`reconnect`, so they recover exactly on another node) and get 1001 "going away"; idle HTTP
/// connections are closed; waits up to `server.shutdown_grace` for everything queued to be
/// written.
async fn drain(core: &Rc<Core>) {
    core.shutting_down.set(true);
    let conns: Vec<_> = core.conns.borrow().values().cloned().collect();
    for c in &conns {
        match c.phase.get() {
            Phase::Unauthed | Phase::Ready => {
                // Socket.IO clients get the close only: socket.io-client then reconnects and
                // resubscribes by itself (a raw JSON frame would be an Engine.IO parse error).
                if !c.is_sio()
                    && let Some(f) = reconnect_frame(core, c)
                {
                    core.push(c, f);
                }
                c.close(CloseCode::Away, "server shutting down", false)
            }
            Phase::Http => c.cancel_read(),
            Phase::Closing => {}
        }
    }
    let deadline = Instant::now() + core.cfg().shutdown_grace;
    while !core.conns.borrow().is_empty() && Instant::now() < deadline {
        monoio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // Let writers flush the close frames they were handed.
    let flush_until = Instant::now() + std::time::Duration::from_millis(100);
    while conns.iter().any(|c| !c.outbox.is_empty()) && Instant::now() < flush_until {
        monoio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    tracing::info!(core = core.id, "core stopped");
}
