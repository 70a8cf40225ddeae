//! Routing and the REST handlers. Order of checks: path (404), method (405), credentials
//! (401/403), then parameters and body (400/413). Every answer is JSON.

use std::time::Duration;

use bytes::Bytes;
use uuid::Uuid;

use super::{ApiError, Head, Response, publish, request::query_pairs};
use crate::{
    channel::{CreateChannel, UpdateChannel},
    control::{
        RestOk, RestReq,
        policies::{PolicyReq, RlsDoc},
    },
    core::{Core, bucket::Bucket},
    engine::HistoryQuery,
    timestamp::Timestamp,
};

/// How long a REST call waits for the control thread before answering 503.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);

/// Every route: its path (`{name}` stands for one segment) and the methods it takes. The
/// OpenAPI document (`docs/openapi.json`, served at `/api/realtime/openapi.json`) lists exactly
/// these; `tests/openapi.rs` fails when they disagree, and the unit test below when
/// `match_path` does.
pub const ROUTES: &[(&str, &str)] = &[
    ("/health", "GET"),
    ("/metrics", "GET"),
    ("/api/realtime/openapi.json", "GET"),
    ("/api/realtime/channels", "GET, POST"),
    ("/api/realtime/channels/{id}", "GET, PUT, PATCH, DELETE"),
    ("/api/realtime/messages", "GET, POST"),
    ("/api/realtime/messages/batch", "POST"),
    ("/api/realtime/messages/stats", "GET"),
    ("/api/realtime/permissions", "GET"),
    ("/api/realtime/permissions/policies", "POST"),
    ("/api/realtime/permissions/policies/{name}", "DELETE"),
    ("/api/realtime/permissions/rls", "PUT"),
    ("/api/realtime/presence/{channelName}", "GET"),
];

/// The OpenAPI 3.1 document of the routes above.
pub const OPENAPI: &str = include_str!("../../docs/openapi.json");

enum Route {
    Health,
    Metrics,
    OpenApi,
    Channels,
    Channel(String),
    Messages,
    PublishBatch,
    Stats,
    Permissions,
    Policies,
    Policy(String),
    Rls,
    Presence(String),
}

fn match_path(path: &str) -> Option<(Route, &'static str)> {
    let p = path
        .strip_suffix('/')
        .filter(|p| !p.is_empty())
        .unwrap_or(path);
    Some(match p {
        "/health" => (Route::Health, "GET"),
        "/metrics" => (Route::Metrics, "GET"),
        "/api/realtime/openapi.json" => (Route::OpenApi, "GET"),
        "/api/realtime/channels" => (Route::Channels, "GET, POST"),
        "/api/realtime/messages" => (Route::Messages, "GET, POST"),
        "/api/realtime/messages/batch" => (Route::PublishBatch, "POST"),
        "/api/realtime/messages/stats" => (Route::Stats, "GET"),
        "/api/realtime/permissions" => (Route::Permissions, "GET"),
        "/api/realtime/permissions/policies" => (Route::Policies, "POST"),
        "/api/realtime/permissions/rls" => (Route::Rls, "PUT"),
        _ => {
            if let Some(name) = p.strip_prefix("/api/realtime/presence/") {
                if name.is_empty() || name.contains('/') {
                    return None;
                }
                return Some((Route::Presence(name.to_string()), "GET"));
            }
            if let Some(name) = p.strip_prefix("/api/realtime/permissions/policies/") {
                if name.is_empty() || name.contains('/') {
                    return None;
                }
                return Some((Route::Policy(name.to_string()), "DELETE"));
            }
            let id = p.strip_prefix("/api/realtime/channels/")?;
            if id.is_empty() || id.contains('/') {
                return None;
            }
            (Route::Channel(id.to_string()), "GET, PUT, PATCH, DELETE")
        }
    })
}

/// A request whose path and method name a route: 404 and 405 are decided, nothing else.
pub struct Endpoint {
    route: Route,
    allowed: &'static str,
}

/// What a request asks for, with its parameters and body read and checked (400s decided).
/// Publishes carry no parsed body: `publish` reads it after the caller is known.
pub enum Call {
    Health,
    Metrics,
    OpenApi,
    Publish,
    PublishBatch,
    Permissions,
    Presence(String),
    Rest(RestReq),
}

/// Resolves the path (404), then the method (405).
pub fn endpoint(head: &Head) -> Result<Endpoint, ApiError> {
    let (route, allowed) = match_path(&head.path)
        .ok_or_else(|| ApiError::not_found(format!("no route for {}", head.path)))?;
    let m = head.method.as_str();
    let method_ok = allowed.split(", ").any(|a| a == m) || (m == "HEAD" && allowed.contains("GET"));
    if !method_ok {
        return Err(ApiError::method_not_allowed(format!(
            "{m} is not allowed here; use {allowed}"
        )));
    }
    Ok(Endpoint { route, allowed })
}

impl Endpoint {
    /// The methods the route takes (an `Allow` header).
    pub fn allowed(&self) -> &'static str {
        self.allowed
    }

    /// Whether the route needs the admin key or a `project_admin` token (checked before
    /// `call`). Health, metrics and publishes do not; publishes authenticate their sender.
    pub fn needs_admin(&self, method: &str) -> bool {
        match self.route {
            Route::Health | Route::Metrics | Route::OpenApi | Route::PublishBatch => false,
            Route::Messages => method != "POST",
            _ => true,
        }
    }

    /// Reads the query and body into the call. Pure: no state, no I/O.
    pub fn call(self, head: &Head, body: &[u8]) -> Result<Call, ApiError> {
        let m = head.method.as_str();
        Ok(match self.route {
            Route::Health => Call::Health,
            Route::Metrics => Call::Metrics,
            Route::OpenApi => Call::OpenApi,
            Route::Messages if m == "POST" => Call::Publish,
            Route::PublishBatch => Call::PublishBatch,
            Route::Channels if m == "POST" => {
                Call::Rest(RestReq::CreateChannel(json_body::<CreateChannel>(body)?))
            }
            Route::Channels => Call::Rest(RestReq::ListChannels),
            Route::Channel(id) => {
                let id = Uuid::parse_str(&id).map_err(|_| {
                    ApiError::bad_request(format!("`{id}` is not a channel id (UUID)"))
                })?;
                Call::Rest(match m {
                    "PUT" | "PATCH" => {
                        RestReq::UpdateChannel(id, json_body::<UpdateChannel>(body)?)
                    }
                    "DELETE" => RestReq::DeleteChannel(id),
                    _ => RestReq::GetChannel(id),
                })
            }
            Route::Messages => Call::Rest(RestReq::Messages(history_query(&head.query)?)),
            Route::Stats => Call::Rest(RestReq::Stats(stats_since(&head.query)?)),
            Route::Permissions => Call::Permissions,
            Route::Policies => {
                #[derive(serde::Deserialize)]
                #[serde(deny_unknown_fields)]
                struct NewPolicy {
                    sql: String,
                }
                let b: NewPolicy = json_body(body)?;
                Call::Rest(RestReq::Policies(PolicyReq::Add(b.sql)))
            }
            Route::Policy(name) => Call::Rest(RestReq::Policies(PolicyReq::Delete(
                percent_decoded(&name)?,
            ))),
            Route::Presence(name) => Call::Presence(percent_decoded(&name)?),
            Route::Rls => Call::Rest(RestReq::Policies(PolicyReq::Rls(json_body::<RlsDoc>(
                body,
            )?))),
        })
    }
}

/// Answers one request (never panics on input; every failure is a JSON error). `bucket`: the
/// connection's publish rate limit (HTTP publishes).
pub async fn route(core: &Core, head: &Head, body: Bytes, bucket: &mut Bucket) -> Response {
    match dispatch(core, head, body, bucket).await {
        Ok(r) => r,
        Err(e) => {
            let mut r = Response::error(&e);
            if e.status == 405 {
                r.allow = match_path(&head.path).map(|(_, a)| a);
            }
            r
        }
    }
}

async fn dispatch(
    core: &Core,
    head: &Head,
    body: Bytes,
    bucket: &mut Bucket,
) -> Result<Response, ApiError> {
    if crate::dashboard::is_path(&head.path) {
        return dashboard(head);
    }
    let ep = endpoint(head)?;
    if ep.needs_admin(&head.method) {
        require_admin(core, head)?;
    }
    let req = match ep.call(head, &body)? {
        Call::Health => return health(core).await,
        Call::Metrics => {
            return Ok(Response {
                status: 200,
                content_type: "text/plain; version=0.0.4",
                body: core.shared.metrics.render().into_bytes(),
                allow: None,
                headers: &[],
            });
        }
        Call::OpenApi => return Ok(Response::json(200, OPENAPI.as_bytes().to_vec())),
        Call::Publish => {
            let who = publish::authenticate(core, head)?;
            return Ok(publish::one(core, &who, bucket, &body).await);
        }
        Call::PublishBatch => {
            let who = publish::authenticate(core, head)?;
            return Ok(publish::batch(core, &who, bucket, &body).await);
        }
        Call::Permissions => {
            let body = serde_json::to_vec(&core.access.borrow().set.permissions())
                .map_err(|e| ApiError::internal(e.to_string()))?;
            return Ok(Response::json(200, body));
        }
        Call::Presence(name) => return presence(core, &name).await,
        Call::Rest(req) => req,
    };
    let RestOk { status, body } = core.rest(req, CONTROL_TIMEOUT).await?;
    Ok(Response::json(status, body))
}

/// A dashboard file (`GET` or `HEAD`, no credentials: the files hold no data).
fn dashboard(head: &Head) -> Result<Response, ApiError> {
    let a = crate::dashboard::asset(&head.path)
        .ok_or_else(|| ApiError::not_found(format!("no dashboard file {}", head.path)))?;
    if head.method != "GET" && head.method != "HEAD" {
        return Err(ApiError::method_not_allowed(format!(
            "{} is not allowed here; use GET",
            head.method
        )));
    }
    Ok(Response {
        status: 200,
        content_type: a.content_type,
        body: a.body.to_vec(),
        allow: None,
        headers: crate::dashboard::HEADERS,
    })
}

/// `GET /api/realtime/presence/{channelName}`: the channel's members, as subscribers with
/// presence see them (every node's, with the redis engine).
async fn presence(core: &Core, name: &str) -> Result<Response, ApiError> {
    let ch = crate::channel::ChannelName::parse(name)
        .map_err(|e| ApiError::bad_request(format!("invalid channel `{name}`: {e}")))?;
    let members = core
        .presence_members(&ch)
        .await
        .ok_or_else(|| ApiError::unavailable("presence did not answer in time; retry"))?;
    #[derive(serde::Serialize)]
    struct Body<'a> {
        channel: &'a str,
        members: &'a [crate::presence::Member],
    }
    let body = serde_json::to_vec(&Body {
        channel: ch.as_str(),
        members: &members,
    })
    .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Response::json(200, body))
}

fn require_admin(core: &Core, head: &Head) -> Result<(), ApiError> {
    let Some(auth) = head.authorization.as_deref() else {
        return Err(ApiError::unauthorized(
            "missing Authorization: Bearer <token>",
        ));
    };
    let token = auth
        .strip_prefix("Bearer ")
        .or_else(|| auth.strip_prefix("bearer "))
        .ok_or_else(|| ApiError::unauthorized("Authorization must be `Bearer <token>`"))?;
    let who = core
        .verifier
        .verify(token.trim())
        .map_err(|e| ApiError::unauthorized(e.to_string()))?;
    if who.role != crate::auth::Role::ProjectAdmin {
        return Err(ApiError::forbidden("project_admin role required"));
    }
    Ok(())
}

/// A path segment with `%XX` escapes decoded (policy names may hold spaces).
fn percent_decoded(seg: &str) -> Result<String, ApiError> {
    let bad = || ApiError::bad_request(format!("`{seg}`: bad percent-encoding"));
    let b = seg.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = seg.get(i + 1..i + 3).ok_or_else(bad)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("a JSON body is required"));
    }
    if !crate::protocol::object::is_object(body) {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))
}

fn timestamp(key: &str, v: &str) -> Result<Timestamp, ApiError> {
    Timestamp::parse(v)
        .ok_or_else(|| ApiError::bad_request(format!("{key}: `{v}` is not an ISO 8601 timestamp")))
}

fn history_query(q: &str) -> Result<HistoryQuery, ApiError> {
    let mut out = HistoryQuery {
        limit: 100,
        ..HistoryQuery::default()
    };
    for (k, v) in query_pairs(q)? {
        match k.as_str() {
            "limit" => {
                out.limit = v
                    .parse::<usize>()
                    .ok()
                    .filter(|l| (1..=1000).contains(l))
                    .ok_or_else(|| ApiError::bad_request("limit must be an integer in 1..=1000"))?
            }
            "offset" => {
                out.offset = v
                    .parse::<usize>()
                    .map_err(|_| ApiError::bad_request("offset must be an integer >= 0"))?
            }
            "channelId" => {
                out.channel_id = Some(Uuid::parse_str(&v).map_err(|_| {
                    ApiError::bad_request(format!("channelId: `{v}` is not a UUID"))
                })?)
            }
            "channelName" => out.channel_name = Some(v),
            "eventName" => out.event_name = Some(v),
            "since" => out.since = Some(timestamp("since", &v)?),
            "until" => out.until = Some(timestamp("until", &v)?),
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter `{other}`"
                )));
            }
        }
    }
    if let (Some(s), Some(u)) = (out.since, out.until)
        && s > u
    {
        return Err(ApiError::bad_request("since must not be after until"));
    }
    Ok(out)
}

fn stats_since(q: &str) -> Result<Option<Timestamp>, ApiError> {
    let mut since = None;
    for (k, v) in query_pairs(q)? {
        match k.as_str() {
            "since" => since = Some(timestamp("since", &v)?),
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter `{other}`"
                )));
            }
        }
    }
    Ok(since)
}

async fn health(core: &Core) -> Result<Response, ApiError> {
    let reachable = core.engine_reachable().await;
    let status = if reachable { "ok" } else { "degraded" };
    let body = serde_json::json!({
        "status": status,
        "engine": core.shared.engine_name,
        "engineReachable": reachable,
        "nodeId": core.shared.node_id,
        "workers": core.shared.metrics.cores.len(),
    });
    Ok(Response::json(
        if reachable { 200 } else { 503 },
        serde_json::to_vec(&body).map_err(|e| ApiError::internal(e.to_string()))?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_route_table_is_what_match_path_routes() {
        for (template, methods) in ROUTES {
            let path = template.replace(['{', '}'], "");
            let (_, allowed) = match_path(&path).unwrap_or_else(|| panic!("{template}: no route"));
            assert_eq!(allowed, *methods, "{template}");
        }
        let known: Vec<&str> = ROUTES.iter().map(|r| r.0).collect();
        for p in [
            "/",
            "/api",
            "/api/realtime",
            "/api/realtime/presence",
            "/api/realtime/x",
        ] {
            assert!(
                match_path(p).is_none(),
                "{p} routes, {known:?} does not list it"
            );
        }
    }
}
