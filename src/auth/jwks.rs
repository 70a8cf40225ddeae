//! The `ringcast-jwks` thread: fetches `auth.jwks_url` (hyper 1.x client, rustls with the
//! Mozilla roots, as the webhook pool) on a current-thread tokio runtime of its own, and
//! publishes each key set in the [`JwksStore`] the cores read (see `auth::keys`).
//!
//! Runs off the cores: a core never waits for it. It fetches at start (`start` waits for that
//! first attempt, bounded by `FETCH_TIMEOUT`, so tokens work as soon as the node is up), then
//! every `auth.jwks_refresh`, and when a core asks (a token with an unknown `kid`), at most
//! once per `MIN_INTERVAL` so a stream of made-up `kid`s cannot hammer the key server. A failed
//! fetch keeps the previous set (logged), and the next one is tried at the next tick or request.

use std::{sync::Arc, thread::JoinHandle, time::Duration};

use bytes::Bytes;
use http::Uri;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tokio::sync::{mpsc, oneshot};

use super::keys::{JwksStore, KeySet};

/// One fetch (connect, answer, body).
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Least time between two fetches (refresh requests in between wait for it).
const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// A larger JWKS document is refused.
const MAX_BODY: usize = 1 << 20;

/// The running fetch thread; `stop` (or drop) ends it.
pub struct JwksHandle {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl JwksHandle {
    pub fn stop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for JwksHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts the thread for `url` (validated: http or https), publishing into `store`, whose
/// refresh requests arrive on `requests`.
pub fn start(
    url: &str,
    refresh: Duration,
    store: Arc<JwksStore>,
    requests: mpsc::Receiver<()>,
) -> std::io::Result<JwksHandle> {
    let uri: Uri = url
        .parse()
        .map_err(|e| std::io::Error::other(format!("auth.jwks_url: {e}")))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (stop_tx, stop_rx) = oneshot::channel();
    let (first_tx, first_rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("ringcast-jwks".into())
        .spawn(move || {
            rt.block_on(run(uri, refresh, store, requests, stop_rx, first_tx));
        })?;
    // The first fetch, so tokens verify from the start; a key server that is down does not
    // stop the node (tokens are refused until a fetch succeeds).
    let _ = first_rx.recv_timeout(FETCH_TIMEOUT + Duration::from_secs(1));
    Ok(JwksHandle {
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}

async fn run(
    uri: Uri,
    refresh: Duration,
    store: Arc<JwksStore>,
    mut requests: mpsc::Receiver<()>,
    mut stop: oneshot::Receiver<()>,
    first: std::sync::mpsc::Sender<()>,
) {
    let client = match client() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "jwks: TLS setup failed; public-key tokens with a kid are refused");
            return;
        }
    };
    let mut first = Some(first);
    loop {
        match fetch(&client, &uri).await {
            Ok((set, skipped)) => {
                tracing::info!(url = %uri, keys = set.keys.len(), skipped, "jwks: key set loaded");
                store.replace(set);
            }
            Err(e) => {
                tracing::warn!(url = %uri, error = %e, "jwks: fetch failed; keeping the previous keys")
            }
        }
        if let Some(f) = first.take() {
            let _ = f.send(());
        }
        tokio::select! {
            _ = tokio::time::sleep(MIN_INTERVAL) => {}
            _ = &mut stop => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(refresh.saturating_sub(MIN_INTERVAL)) => {}
            r = requests.recv() => if r.is_none() { return },
            _ = &mut stop => return,
        }
    }
}

type JwksClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

fn client() -> Result<JwksClient, String> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(FETCH_TIMEOUT));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new()).build(https))
}

async fn fetch(client: &JwksClient, uri: &Uri) -> Result<(KeySet, usize), String> {
    let req = http::Request::get(uri.clone())
        .header(http::header::ACCEPT, "application/json")
        .header(
            http::header::USER_AGENT,
            concat!("ringcast/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let body = tokio::time::timeout(FETCH_TIMEOUT, async {
        let resp = client.request(req).await.map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("HTTP {}", resp.status()));
        }
        Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .map_err(|e| format!("body: {e}"))
    })
    .await
    .map_err(|_| format!("no answer within {FETCH_TIMEOUT:?}"))??;
    KeySet::parse(&body)
}
