//! Worker threads: each runs a current-thread tokio runtime with a `LocalSet`, so the
//! connection tasks of one thread share `Rc` state without locks. Connections are dealt
//! round-robin over threads by the modes.

use std::{future::Future, sync::Arc, thread::JoinHandle};

use anyhow::anyhow;

pub struct Workers<R> {
    handles: Vec<JoinHandle<anyhow::Result<R>>>,
}

/// Starts `n` threads, each running `f(thread_index)` to completion.
pub fn spawn<R, Fut, F>(n: usize, f: F) -> anyhow::Result<Workers<R>>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R> + 'static,
    R: Send + 'static,
{
    let f = Arc::new(f);
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let f = f.clone();
        let h = std::thread::Builder::new()
            .name(format!("loadtest-{i}"))
            .spawn(move || -> anyhow::Result<R> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                let local = tokio::task::LocalSet::new();
                Ok(local.block_on(&rt, f(i)))
            })?;
        handles.push(h);
    }
    Ok(Workers { handles })
}

impl<R> Workers<R> {
    pub fn join(self) -> anyhow::Result<Vec<R>> {
        self.handles
            .into_iter()
            .map(|h| h.join().map_err(|_| anyhow!("a worker thread panicked"))?)
            .collect()
    }
}
