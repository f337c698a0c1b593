//! The HTTP API (axum 0.8): routes under /v1, health probes, /metrics, the OpenAPI
//! document; bearer-token auth on mutating methods; body size limit; every error as a JSON
//! body `{"error": {"code", "message"}}`.
//!
//! Owns request parsing and response shapes. Does not hold state (see `core`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{
    ConnectInfo, DefaultBodyLimit, FromRequestParts, MatchedPath, Path, Query, Request, State,
};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use dwcp_shm::{DROP_REASONS, Role, Stat, TransferMode};
use prometheus_client::registry::Registry;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::{FlagSpec, JobRequest, RolloutPlan};
use crate::core::Core;
use crate::error::ApiError;
use crate::metrics::{HttpLabels, HttpMetrics, RouteLabels};
use crate::rollout::Action;

/// The committed OpenAPI 3 document, served at /v1/openapi.json.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// Every route: (method, path template). The OpenAPI document must list exactly these.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/livez"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/v1/openapi.json"),
    ("get", "/v1/health"),
    ("get", "/v1/flags"),
    ("get", "/v1/flags/{name}"),
    ("put", "/v1/flags/{name}"),
    ("delete", "/v1/flags/{name}"),
    ("get", "/v1/rollout"),
    ("post", "/v1/rollout/plan"),
    ("post", "/v1/rollout/pause"),
    ("post", "/v1/rollout/resume"),
    ("post", "/v1/rollout/promote"),
    ("post", "/v1/rollout/abort"),
    ("post", "/v1/rollout/rollback"),
    ("get", "/v1/rollout/decisions"),
    ("get", "/v1/jobs"),
    ("post", "/v1/jobs"),
    ("get", "/v1/jobs/{id}"),
    ("post", "/v1/jobs/{id}/cancel"),
    ("get", "/v1/audit"),
];

#[derive(Debug, Clone)]
struct AppState {
    core: Arc<Core>,
    registry: Arc<Registry>,
    http: HttpMetrics,
}

/// Who made a request: `X-DWCP-Actor` (or "token") and the client address.
#[derive(Debug, Clone)]
pub struct Actor(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Actor {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let who = match parts.headers.get("x-dwcp-actor") {
            None => "token".to_owned(),
            Some(v) => {
                let s = v.to_str().unwrap_or("");
                if s.is_empty()
                    || s.len() > 64
                    || !s.bytes().all(|c| c.is_ascii_graphic() || c == b' ')
                {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_header",
                        "X-DWCP-Actor must be 1..=64 printable ASCII characters",
                    ));
                }
                s.to_owned()
            }
        };
        let from = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.to_string())
            .unwrap_or_else(|| "unknown".into());
        Ok(Actor(format!("{who}@{from}")))
    }
}

fn json_rejection(r: JsonRejection) -> ApiError {
    let status = r.status();
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_body",
        _ => "invalid_json",
    };
    ApiError::new(status, code, r.body_text())
}

fn body<T>(r: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    r.map(|Json(v)| v).map_err(json_rejection)
}

fn path<T>(r: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    r.map(|Path(v)| v)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_path", e.body_text()))
}

/// `?limit=N` (1..=1000, default 100); nothing else accepted.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitQuery {
    limit: Option<usize>,
}

fn limit(q: Result<Query<LimitQuery>, QueryRejection>) -> Result<usize, ApiError> {
    let q =
        q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text()))?;
    match q.0.limit {
        None => Ok(100),
        Some(n @ 1..=1000) => Ok(n),
        Some(n) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("limit {n} must be in 1..=1000"),
        )),
    }
}

/// Builds the router. Serve it with `into_make_service_with_connect_info::<SocketAddr>()` so
/// the audit log records client addresses.
pub fn router(core: Arc<Core>) -> Router {
    let http = HttpMetrics::default();
    let registry = Arc::new(crate::metrics::registry(core.clone(), &http));
    let body_limit = core.cfg.body_limit_bytes;
    let state = AppState {
        core,
        registry,
        http,
    };
    let mut r = Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/health", get(health))
        .route("/v1/flags", get(list_flags))
        .route(
            "/v1/flags/{name}",
            get(get_flag).put(put_flag).delete(delete_flag),
        )
        .route("/v1/rollout", get(get_rollout))
        .route("/v1/rollout/plan", post(post_plan))
        .route("/v1/rollout/decisions", get(decisions));
    for (p, a) in [
        ("/v1/rollout/pause", Action::Pause),
        ("/v1/rollout/resume", Action::Resume),
        ("/v1/rollout/promote", Action::Promote),
        ("/v1/rollout/abort", Action::Abort),
        ("/v1/rollout/rollback", Action::Rollback),
    ] {
        r = r.route(
            p,
            post(move |State(s): State<AppState>, actor: Actor| async move {
                s.core.rollout_action(a, &actor.0).map(Json)
            }),
        );
    }
    r.route("/v1/jobs", get(list_jobs).post(create_job))
        .route("/v1/jobs/{id}", get(get_job))
        .route("/v1/jobs/{id}/cancel", post(cancel_job))
        .route("/v1/audit", get(audit))
        .route_layer(middleware::from_fn_with_state(state.clone(), track))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .layer(middleware::from_fn(json_errors))
        .with_state(state)
}

/// The label value of a method (no allocation per request).
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// The route template as a `'static` label value (one of [`ROUTES`]).
fn route_label(m: Option<&MatchedPath>) -> &'static str {
    m.and_then(|m| ROUTES.iter().find(|(_, p)| *p == m.as_str()))
        .map_or("unmatched", |(_, p)| p)
}

/// Records request count and latency by matched route. Labels are `'static` strings, so the
/// read path does not allocate for metrics.
async fn track(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let method = method_label(req.method());
    let route = route_label(req.extensions().get::<MatchedPath>());
    let t = Instant::now();
    let resp = next.run(req).await;
    s.http
        .duration
        .get_or_create(&RouteLabels { method, route })
        .observe(t.elapsed().as_secs_f64());
    s.http
        .requests
        .get_or_create(&HttpLabels {
            method,
            route,
            status: resp.status().as_u16(),
        })
        .inc();
    resp
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Mutating methods need `Authorization: Bearer <token>`; checked before the body is read.
async fn auth(State(s): State<AppState>, req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    let ok = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| constant_time_eq(t.trim().as_bytes(), s.core.token().as_bytes()));
    if ok {
        return next.run(req).await;
    }
    let mut resp = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "mutating requests need the header Authorization: Bearer <token>",
    )
    .into_response();
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

/// Turns any non-JSON error response (405 from the router, 413 from the body limit, ...) into
/// the JSON error shape.
async fn json_errors(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let code = match status {
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    };
    let message = match status {
        StatusCode::METHOD_NOT_ALLOWED => format!("method {method} is not allowed on this path"),
        s => s.canonical_reason().unwrap_or("error").to_owned(),
    };
    let mut out = ApiError::new(status, code, message).into_response();
    if let Some(allow) = resp.headers().get(header::ALLOW) {
        out.headers_mut().insert(header::ALLOW, allow.clone());
    }
    out
}

async fn not_found(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route for {method} {}", uri.path()))
}

async fn livez() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(s): State<AppState>) -> Response {
    let r = s.core.readiness();
    let status = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({"status": if r.ready {"ready"} else {"not_ready"}, "failing": r.failing})),
    )
        .into_response()
}

/// Serves OpenMetrics to clients that ask for it (Prometheus does, in `Accept`) and the
/// Prometheus text format 0.0.4 to the others (curl, `promtool check metrics`).
async fn metrics(
    State(s): State<AppState>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let mut out = String::with_capacity(16 * 1024);
    prometheus_client::encoding::text::encode(&mut out, &s.registry)
        .map_err(|e| ApiError::internal(format!("encoding metrics: {e}")))?;
    let openmetrics = headers.get_all(header::ACCEPT).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.contains("application/openmetrics-text"))
    });
    if openmetrics {
        return Ok((
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            out,
        )
            .into_response());
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::openmetrics_to_text(&out),
    )
        .into_response())
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn health(State(s): State<AppState>) -> Json<Value> {
    let core = &s.core;
    let region = core.region();
    let stale_ms = core.cfg.heartbeat_stale_ms as u128;
    let ready = core.readiness();
    let dp = region.side_status(Role::Dataplane);
    let age_ms = |a: Option<std::time::Duration>| a.map(|d| d.as_millis() as u64);
    let dp_status = match dp.heartbeat_age {
        _ if !dp.alive => "down",
        Some(a) if a.as_millis() <= stale_ms => "ok",
        _ => "stale",
    };
    let ring = |(head, tail): (u64, u64), slots: u32, failing: Option<&String>| {
        json!({
            "status": if failing.is_some() {"stuck"} else {"ok"},
            "head": head, "tail": tail, "lag": head - tail, "slots": slots,
            "problem": failing,
        })
    };
    let now = dwcp_shm::monotonic_ns();
    let workers: Vec<Value> = region
        .stats_reader()
        .all()
        .iter()
        .map(|w| {
            let hb = w.get(Stat::HeartbeatNs);
            let age = (hb != 0).then(|| now.saturating_sub(hb) / 1_000_000);
            let status = match age {
                None => "idle",
                Some(a) if u128::from(a) <= stale_ms => "ok",
                Some(_) => "stale",
            };
            let drops: serde_json::Map<String, Value> = DROP_REASONS
                .iter()
                .map(|(st, name)| ((*name).to_owned(), json!(w.get(*st))))
                .collect();
            json!({
                "worker": w.worker, "status": status, "heartbeat_age_ms": age,
                "rx_frames": w.get(Stat::RxFrames), "tx_frames": w.get(Stat::TxFrames),
                "errors": w.get(Stat::Errors), "retransmits": w.get(Stat::Retransmits),
                "drops_total": w.drops(), "drops": drops,
                "mode": TransferMode::from_code(w.get(Stat::Mode)).unwrap_or_default().as_str(),
                "latency_p99_us": w.get(Stat::LatencyP99Us),
                "cpu_percent": w.get(Stat::CpuPermille) as f64 / 10.0,
            })
        })
        .collect();
    let c = core.counters();
    let g = region.geometry();
    Json(json!({
        "status": if ready.ready {"ok"} else {"degraded"},
        "failing": ready.failing,
        "components": {
            "shm": {
                "status": "ok", "path": region.path(), "abi_version": dwcp_shm::ABI_VERSION,
                "size_bytes": region.layout().size,
                "geometry": {"cmd_slots": g.cmd_slots, "evt_slots": g.evt_slots,
                             "workers": g.workers, "flag_entries": g.flag_entries},
                "table_generation": region.table_reader().generation(),
            },
            "dataplane": {
                "status": dp_status, "pid": dp.pid, "alive": dp.alive, "epoch": dp.epoch,
                "heartbeat_age_ms": age_ms(dp.heartbeat_age),
            },
            "command_ring": ring(region.command_positions(), g.cmd_slots, ready.failing.get("command_ring")),
            "event_ring": ring(region.event_positions(), g.evt_slots, ready.failing.get("event_ring")),
            "workers": workers,
            "control": {
                "status": if c.commands_ring_full == 0 && c.events_bad == 0 {"ok"} else {"degraded"},
                "commands_sent": c.commands_sent, "commands_ring_full": c.commands_ring_full,
                "events_applied": c.events_applied, "events_duplicate": c.events_duplicate,
                "events_bad": c.events_bad, "dataplane_restarts": c.dataplane_restarts,
            },
        }
    }))
}

async fn list_flags(State(s): State<AppState>) -> Json<Value> {
    Json(json!({"flags": s.core.list_flags()}))
}

async fn get_flag(
    State(s): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    Ok(Json(s.core.get_flag(&path(name)?)?).into_response())
}

async fn put_flag(
    State(s): State<AppState>,
    actor: Actor,
    name: Result<Path<String>, PathRejection>,
    spec: Result<Json<FlagSpec>, JsonRejection>,
) -> Result<Response, ApiError> {
    let name = path(name)?;
    let spec = body(spec)?;
    Ok(Json(s.core.set_flag(&name, spec, &actor.0)?).into_response())
}

async fn delete_flag(
    State(s): State<AppState>,
    actor: Actor,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    s.core.delete_flag(&path(name)?, &actor.0)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn get_rollout(State(s): State<AppState>) -> Result<Response, ApiError> {
    Ok(Json(s.core.rollout_view()?).into_response())
}

async fn post_plan(
    State(s): State<AppState>,
    actor: Actor,
    plan: Result<Json<RolloutPlan>, JsonRejection>,
) -> Result<Response, ApiError> {
    let plan = body(plan)?;
    Ok(Json(s.core.post_plan(plan, &actor.0)?).into_response())
}

async fn decisions(
    State(s): State<AppState>,
    q: Result<Query<LimitQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let n = limit(q)?;
    Ok(Json(json!({"decisions": s.core.decisions(n)?})).into_response())
}

async fn list_jobs(State(s): State<AppState>) -> Json<Value> {
    Json(json!({"jobs": s.core.list_jobs()}))
}

async fn create_job(
    State(s): State<AppState>,
    actor: Actor,
    req: Result<Json<JobRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let req = body(req)?;
    let job = s.core.create_job(req, &actor.0)?;
    Ok((StatusCode::CREATED, Json(job)).into_response())
}

fn job_id(p: Result<Path<String>, PathRejection>) -> Result<u64, ApiError> {
    let raw = path(p)?;
    raw.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_path",
            format!("job id {raw:?} is not an unsigned integer"),
        )
    })
}

async fn get_job(
    State(s): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    Ok(Json(s.core.get_job(job_id(id)?)?).into_response())
}

async fn cancel_job(
    State(s): State<AppState>,
    actor: Actor,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = job_id(id)?;
    Ok((StatusCode::ACCEPTED, Json(s.core.cancel_job(id, &actor.0)?)).into_response())
}

async fn audit(
    State(s): State<AppState>,
    q: Result<Query<LimitQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let n = limit(q)?;
    Ok(Json(json!({"entries": s.core.audit(n)?})).into_response())
}
