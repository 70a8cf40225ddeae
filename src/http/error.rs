//! `ApiError`: every REST failure, mapped to one HTTP status and a JSON body
//! `{"error": CODE, "message": text}` in one place (CONTRACT.md).

#[derive(Debug, Clone, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
    /// An error with its own code (a publish's WebSocket `code`, `http::publish`).
    pub fn coded(status: u16, code: &'static str, m: impl Into<String>) -> Self {
        Self::new(status, code, m)
    }
    pub fn bad_request(m: impl Into<String>) -> Self {
        Self::new(400, "BAD_REQUEST", m)
    }
    pub fn unauthorized(m: impl Into<String>) -> Self {
        Self::new(401, "UNAUTHORIZED", m)
    }
    pub fn forbidden(m: impl Into<String>) -> Self {
        Self::new(403, "FORBIDDEN", m)
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(404, "NOT_FOUND", m)
    }
    pub fn method_not_allowed(m: impl Into<String>) -> Self {
        Self::new(405, "METHOD_NOT_ALLOWED", m)
    }
    pub fn timeout(m: impl Into<String>) -> Self {
        Self::new(408, "REQUEST_TIMEOUT", m)
    }
    pub fn conflict(m: impl Into<String>) -> Self {
        Self::new(409, "CONFLICT", m)
    }
    pub fn length_required(m: impl Into<String>) -> Self {
        Self::new(411, "LENGTH_REQUIRED", m)
    }
    pub fn too_large(m: impl Into<String>) -> Self {
        Self::new(413, "PAYLOAD_TOO_LARGE", m)
    }
    pub fn headers_too_large(m: impl Into<String>) -> Self {
        Self::new(431, "HEADERS_TOO_LARGE", m)
    }
    pub fn internal(m: impl Into<String>) -> Self {
        Self::new(500, "INTERNAL", m)
    }
    pub fn unavailable(m: impl Into<String>) -> Self {
        Self::new(503, "UNAVAILABLE", m)
    }

    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({"error": self.code, "message": self.message}))
            .expect("serializing a JSON value cannot fail")
    }
}
