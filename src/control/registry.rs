//! The authoritative channel registry (owned by the control thread) and the REST operations
//! that read or change it, history and stats included. Every change is saved through the
//! engine, then a new `ChannelTable` is pushed to all cores before the caller is answered.

use std::{collections::HashMap, future::Future, pin::Pin, sync::Arc};

use tokio::sync::oneshot;
use uuid::Uuid;

use super::{Control, RestOk, RestReq};
use crate::{
    channel::{
        ChannelName, ChannelPattern, ChannelRecord, ChannelTable, ResolveCache, UpdateChannel,
        validate_webhook_urls,
    },
    engine::{Engine, EngineError},
    http::ApiError,
    timestamp::Timestamp,
};

pub struct Registry {
    records: HashMap<Uuid, Arc<ChannelRecord>>,
    table: Arc<ChannelTable>,
    cache: ResolveCache,
    version: u64,
}

impl Registry {
    pub fn new(records: Vec<ChannelRecord>) -> Self {
        let mut r = Self {
            records: records.into_iter().map(|c| (c.id, Arc::new(c))).collect(),
            table: Arc::default(),
            cache: ResolveCache::default(),
            version: 0,
        };
        r.rebuild();
        r
    }

    /// Replaces every record (another node changed the registry); false if nothing changed.
    pub fn replace(&mut self, records: Vec<ChannelRecord>) -> bool {
        let next: HashMap<Uuid, Arc<ChannelRecord>> =
            records.into_iter().map(|c| (c.id, Arc::new(c))).collect();
        if next == self.records {
            return false;
        }
        self.records = next;
        self.rebuild();
        true
    }

    pub fn table(&self) -> Arc<ChannelTable> {
        self.table.clone()
    }

    /// The enabled record a name resolves to now (memoized per table version).
    pub fn resolve(&mut self, name: &ChannelName) -> Option<Arc<ChannelRecord>> {
        self.cache.resolve(&self.table, name)
    }

    fn rebuild(&mut self) {
        self.version += 1;
        self.table = Arc::new(ChannelTable::build(
            self.version,
            self.records.values().cloned(),
        ));
    }

    fn pattern_taken(&self, pattern: &str, except: Option<Uuid>) -> bool {
        self.records
            .values()
            .any(|r| r.pattern.as_str() == pattern && Some(r.id) != except)
    }

    /// Records sorted by creation time (then id), as a listing should be stable.
    fn sorted(&self) -> Vec<&Arc<ChannelRecord>> {
        let mut v: Vec<_> = self.records.values().collect();
        v.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        v
    }
}

fn json<T: serde::Serialize>(status: u16, v: &T) -> Result<RestOk, ApiError> {
    Ok(RestOk {
        status,
        body: serde_json::to_vec(v).map_err(|e| ApiError::internal(e.to_string()))?,
    })
}

fn parse_pattern(p: &str) -> Result<ChannelPattern, ApiError> {
    ChannelPattern::parse(p).map_err(|e| ApiError::bad_request(format!("pattern: {e}")))
}

fn check_urls(urls: &Option<Vec<String>>) -> Result<(), ApiError> {
    match urls {
        Some(u) => validate_webhook_urls(u).map_err(ApiError::bad_request),
        None => Ok(()),
    }
}

fn check_description(d: &Option<String>) -> Result<(), ApiError> {
    match d {
        Some(d) if d.len() > 4096 => Err(ApiError::bad_request("description: at most 4096 bytes")),
        _ => Ok(()),
    }
}

pub(super) async fn handle_rest<E: Engine>(
    c: &mut Control<E>,
    req: RestReq,
) -> Result<RestOk, ApiError> {
    let not_found = || ApiError::not_found("channel not found");
    match req {
        RestReq::ListChannels => json(200, &c.registry.sorted()),
        RestReq::GetChannel(id) => json(200, c.registry.records.get(&id).ok_or_else(not_found)?),
        RestReq::CreateChannel(body) => {
            let pattern = parse_pattern(&body.pattern)?;
            check_urls(&body.webhook_urls)?;
            check_description(&body.description)?;
            if c.registry.pattern_taken(pattern.as_str(), None) {
                return Err(ApiError::conflict(format!(
                    "a channel with pattern `{pattern}` already exists"
                )));
            }
            let now = Timestamp::now();
            let rec = ChannelRecord {
                // v7: time-ordered, so the (createdAt, id) listing order is creation order
                // even for channels created within the same millisecond.
                id: Uuid::now_v7(),
                pattern,
                description: body.description,
                webhook_urls: body.webhook_urls,
                enabled: body.enabled.unwrap_or(true),
                created_at: now,
                updated_at: now,
            };
            let r = c.engine.create_channel(&rec).await;
            stored(c, r, rec, 201).await
        }
        RestReq::UpdateChannel(id, body) => {
            let UpdateChannel {
                pattern,
                description,
                webhook_urls,
                enabled,
            } = body;
            let old = c.registry.records.get(&id).ok_or_else(not_found)?.clone();
            let mut rec = (*old).clone();
            if let Some(p) = pattern {
                let p = parse_pattern(&p)?;
                if c.registry.pattern_taken(p.as_str(), Some(id)) {
                    return Err(ApiError::conflict(format!(
                        "a channel with pattern `{p}` already exists"
                    )));
                }
                rec.pattern = p;
            }
            if let Some(d) = description {
                check_description(&d)?;
                rec.description = d;
            }
            if let Some(u) = webhook_urls {
                check_urls(&u)?;
                rec.webhook_urls = u;
            }
            if let Some(e) = enabled {
                rec.enabled = e;
            }
            // Strictly increasing, even within one millisecond.
            rec.updated_at = Timestamp::now().max(Timestamp(rec.updated_at.0 + 1));
            let r = c.engine.update_channel(&old, &rec).await;
            stored(c, r, rec, 200).await
        }
        RestReq::DeleteChannel(id) => {
            let rec = c.registry.records.get(&id).ok_or_else(not_found)?.clone();
            c.engine.delete_channel(&rec).await.map_err(api_error)?;
            c.registry.records.remove(&id);
            changed(c).await;
            Ok(RestOk {
                status: 204,
                body: Vec::new(),
            })
        }
        RestReq::Messages(_) | RestReq::Stats(_) => {
            unreachable!("reads are answered by `spawn_read`")
        }
        RestReq::Policies(p) => super::policies::handle(c, p).await,
    }
}

/// Answers a history or stats request from a task of its own (`Engine::history` owns what it
/// needs), so a long scan does not hold up the control loop. At most `READS` at once; past
/// that the request is refused with 503 and nothing waits.
pub(super) fn spawn_read<E: Engine>(
    c: &mut Control<E>,
    req: RestReq,
    reply: oneshot::Sender<Result<RestOk, ApiError>>,
) {
    let Ok(slot) = c.reads.clone().try_acquire_owned() else {
        let _ = reply.send(Err(ApiError::unavailable(
            "too many history or stats reads in progress; retry",
        )));
        return;
    };
    let answer: Pin<Box<dyn Future<Output = Result<RestOk, ApiError>>>> = match req {
        RestReq::Messages(q) => {
            let read = c.engine.history(&q);
            Box::pin(async move { json(200, &read.await.map_err(api_error)?) })
        }
        RestReq::Stats(since) => {
            let read = c.engine.stats(since);
            Box::pin(async move { json(200, &read.await.map_err(api_error)?) })
        }
        _ => unreachable!("only reads are spawned"),
    };
    tokio::task::spawn_local(async move {
        let _slot = slot;
        let _ = reply.send(answer.await);
    });
}

fn api_error(e: EngineError) -> ApiError {
    match e {
        EngineError::Conflict(m) => ApiError::conflict(m),
        other => ApiError::unavailable(other.to_string()),
    }
}

/// After the engine stored (or refused) a record: update the registry and the cores.
async fn stored<E: Engine>(
    c: &mut Control<E>,
    r: Result<(), EngineError>,
    rec: ChannelRecord,
    status: u16,
) -> Result<RestOk, ApiError> {
    r.map_err(api_error)?;
    let rec = Arc::new(rec);
    c.registry.records.insert(rec.id, rec.clone());
    changed(c).await;
    json(status, &rec)
}

/// Reloads the registry and the policies from the engine (a change announced by any node).
pub(super) async fn reload<E: Engine>(c: &mut Control<E>) {
    let channels = match c.engine.load_channels().await {
        Ok(records) => c.registry.replace(records),
        Err(e) => {
            tracing::warn!(error = %e, "registry reload failed; keeping the current table");
            false
        }
    };
    let policies = super::policies::refresh(c).await;
    if channels || policies {
        c.shared.metrics.control.registry_changes_total.inc();
        c.push_table().await;
    }
}

pub(super) async fn changed<E: Engine>(c: &mut Control<E>) {
    c.registry.rebuild();
    c.shared.metrics.control.registry_changes_total.inc();
    c.push_table().await;
}
