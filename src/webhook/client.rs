//! The HTTP side of a delivery: one hyper 1.x client per node (keep-alive pools per host,
//! HTTP and HTTPS through rustls with the Mozilla roots plus `webhooks.ca_file`), one POST per
//! attempt with a timeout covering connect, answer and a bounded body read, and (with
//! `deny_private_networks`) a resolver that refuses private, loopback and link-local targets.

use std::{
    future::Future,
    io,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderValue, Request, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{
        Client,
        connect::{HttpConnector, dns::Name},
    },
    rt::TokioExecutor,
};

use super::{Job, envelope, retry::Verdict};
use crate::{config::WebhookConfig, metrics::WebhookMetrics, timestamp::Timestamp};

/// Answers larger than this are not read to the end (the connection is then not reused).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("webhooks.ca_file: {0}")]
    Ca(String),
    #[error("TLS setup: {0}")]
    Tls(String),
}

/// The result of one attempt, for the retry loop and the logs.
#[derive(Debug)]
pub struct Attempt {
    pub verdict: Verdict,
    /// `404`, `timeout`, `connection refused`, ...
    pub detail: String,
}

pub struct WebhookClient {
    client: Client<HttpsConnector<HttpConnector<GuardedResolver>>, Full<Bytes>>,
    timeout: Duration,
    secret: Option<Vec<u8>>,
    deny_private: bool,
}

impl WebhookClient {
    pub fn new(cfg: &WebhookConfig) -> Result<Self, ClientError> {
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        if let Some(path) = &cfg.ca_file {
            use rustls::pki_types::{CertificateDer, pem::PemObject};
            let mut n = 0;
            for cert in CertificateDer::pem_file_iter(path)
                .map_err(|e| ClientError::Ca(format!("{}: {e}", path.display())))?
            {
                let cert = cert.map_err(|e| ClientError::Ca(format!("{}: {e}", path.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| ClientError::Ca(format!("{}: {e}", path.display())))?;
                n += 1;
            }
            if n == 0 {
                return Err(ClientError::Ca(format!(
                    "{}: no PEM certificate in it",
                    path.display()
                )));
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let mut http = HttpConnector::new_with_resolver(GuardedResolver {
            deny_private: cfg.deny_private,
        });
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(cfg.timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(cfg.max_per_endpoint)
            .build(https);
        Ok(Self {
            client,
            timeout: cfg.timeout,
            secret: cfg.secret.as_ref().map(|s| s.as_bytes().to_vec()),
            deny_private: cfg.deny_private,
        })
    }

    /// One POST of `job`'s envelope.
    pub async fn attempt(&self, job: &Job, metrics: &WebhookMetrics) -> Attempt {
        let uri: Uri = match job.url.parse() {
            Ok(u) => u,
            Err(e) => return permanent(format!("invalid URL: {e}")),
        };
        // IP literals bypass the resolver, so they are checked here.
        if self.deny_private
            && let Some(ip) = uri
                .host()
                .and_then(|h| h.trim_start_matches('[').trim_end_matches(']').parse().ok())
            && is_private(ip)
        {
            return permanent(format!("{ip} is a private address (deny_private_networks)"));
        }
        let ts = Timestamp::now().millis() / 1000;
        let mut req = Request::post(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .header(
                header::USER_AGENT,
                concat!("ringcast/", env!("CARGO_PKG_VERSION")),
            )
            .header("X-InsForge-Channel", job.channel.as_str())
            .header("X-InsForge-Message-ID", &*job.message_id)
            .header("X-InsForge-Timestamp", ts);
        if let Ok(v) = HeaderValue::from_str(&job.event) {
            req = req.header("X-InsForge-Event", v);
        }
        if let Some(secret) = &self.secret {
            req = req.header(
                "X-InsForge-Signature",
                envelope::sign(secret, ts, &job.body),
            );
        }
        let req = match req.body(Full::new(job.body.clone())) {
            Ok(r) => r,
            Err(e) => return permanent(format!("request: {e}")),
        };
        WebhookMetrics::inc(&metrics.attempts);
        WebhookMetrics::inc(&metrics.in_flight);
        let started = Instant::now();
        let result = tokio::time::timeout(self.timeout, async {
            let resp = self.client.request(req).await?;
            let (parts, body) = resp.into_parts();
            // Read (a bounded amount of) the answer so the connection can be reused.
            let _ = Limited::new(body, MAX_ANSWER_BYTES).collect().await;
            Ok::<_, hyper_util::client::legacy::Error>(parts)
        })
        .await;
        metrics.observe(started.elapsed());
        WebhookMetrics::dec(&metrics.in_flight);
        match result {
            Err(_) => Attempt {
                verdict: Verdict::Retry { after: None },
                detail: format!("no answer within {:?}", self.timeout),
            },
            Ok(Err(e)) if refused_target(&e) => permanent(error_chain(&e)),
            Ok(Err(e)) => Attempt {
                verdict: Verdict::Retry { after: None },
                detail: error_chain(&e),
            },
            Ok(Ok(parts)) => Attempt {
                verdict: super::retry::classify(parts.status, &parts.headers),
                detail: parts.status.to_string(),
            },
        }
    }
}

fn permanent(detail: String) -> Attempt {
    Attempt {
        verdict: Verdict::Permanent,
        detail,
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Whether the error is the resolver refusing a private target (not worth retrying).
fn refused_target(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if let Some(io) = c.downcast_ref::<io::Error>()
            && io.get_ref().is_some_and(|i| i.is::<PrivateTarget>())
        {
            return true;
        }
        if c.is::<PrivateTarget>() {
            return true;
        }
        cur = c.source();
    }
    false
}

#[derive(Debug, thiserror::Error)]
#[error("`{0}` resolves only to private, loopback or link-local addresses (deny_private_networks)")]
struct PrivateTarget(String);

/// The system resolver, optionally refusing non-public addresses (DNS rebinding cannot slip a
/// private address past a check made before the connection: this is the connection's lookup).
#[derive(Clone)]
struct GuardedResolver {
    deny_private: bool,
}

impl tower_service::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let deny = self.deny_private;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| !deny || !is_private(a.ip()))
                .collect();
            if addrs.is_empty() && deny {
                return Err(io::Error::other(PrivateTarget(host)));
            }
            Ok(addrs.into_iter())
        })
    }
}

/// Loopback, private (RFC 1918, ULA), link-local, CGNAT, unspecified and broadcast.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || o[0] == 0
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let path = std::env::temp_dir().join(format!("ringcast-bad-ca-{}.pem", std::process::id()));
        std::fs::write(&path, "not a certificate\n").unwrap();
        let mut cfg = crate::config::Config::defaults().webhooks;
        cfg.ca_file = Some(path.clone());
        let err = WebhookClient::new(&cfg).err().map(|e| e.to_string());
        let _ = std::fs::remove_file(&path);
        let err = err.expect("refused");
        assert!(err.contains("no PEM certificate"), "{err}");
        cfg.ca_file = None;
        assert!(WebhookClient::new(&cfg).is_ok());
    }

    #[test]
    fn private_addresses() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_private(a.parse().unwrap()), "{a}");
        }
        for a in ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "100.128.0.1"] {
            assert!(!is_private(a.parse().unwrap()), "{a}");
        }
    }
}
