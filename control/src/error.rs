//! Errors: `ApiError` (what an HTTP client sees, always a JSON body
//! `{"error": {"code", "message"}}`) and `ControlError` (startup and storage failures).
//!
//! Owns the mapping from failures to status codes. Does not log.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// An error returned to an HTTP client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// Human-readable detail naming the problem.
    pub message: String,
}

impl ApiError {
    /// Any status.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
    /// 422 invalid_argument: well-formed JSON with a bad value.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_argument",
            message,
        )
    }
    /// 404 not_found.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    /// 409 conflict: the request does not fit the current state.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }
    /// 500 internal.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({"error": {"code": self.code, "message": self.message}})
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::internal(format!("state store: {e}"))
    }
}

/// Storage failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// redb failed.
    #[error("{op}: {source}")]
    Db {
        /// What was being done.
        op: &'static str,
        /// The database error.
        #[source]
        source: Box<redb::Error>,
    },
    /// A stored record did not parse.
    #[error("record {key} in {table}: {source}")]
    Decode {
        /// Table.
        table: &'static str,
        /// Key.
        key: String,
        /// Parse error.
        #[source]
        source: serde_json::Error,
    },
}

/// Startup failures of the control process.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Config file unreadable or invalid.
    #[error("config {path}: {message}")]
    Config {
        /// File.
        path: std::path::PathBuf,
        /// Problem.
        message: String,
    },
    /// State store failure.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Shared memory failure.
    #[error("shared memory: {0}")]
    Shm(#[from] dwcp_shm::ShmError),
    /// File system failure.
    #[error("{op} {path}: {source}")]
    Io {
        /// What.
        op: &'static str,
        /// Where.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Seeded state did not validate.
    #[error("seed: {0}")]
    Seed(ApiError),
}
