//! API errors and request ids.
//!
//! Every answer carries `x-request-id`; every error answer is
//! `{"error": "<message>", "kind": "<kind>", "request_id": "<id>"}` with the
//! status of its kind. The message says what to do, never how the server
//! failed: the cause (ClickHouse's text) goes to the log, once, at the edge
//! ([`request_id`]), under the same request id.

use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Json;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use javelin_schema::clickhouse_error::{ErrorClass, classify, code_of};

/// The class of an error: decides the status and the `kind` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed or asks for too much (400).
    BadRequest,
    /// The bearer token is missing or wrong (401).
    Unauthorized,
    /// No such endpoint (404).
    NotFound,
    /// The query would read more rows than `--max-rows-scanned` (422).
    ScanLimit,
    /// The query ran longer than `--query-timeout-seconds` (504).
    Timeout,
    /// ClickHouse cannot answer now; a retry may succeed (503).
    Unavailable,
    /// A fault of the query API or its configuration; a retry will not help (500).
    Internal,
}

impl ErrorKind {
    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::ScanLimit => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `kind` field of the error body.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::NotFound => "not_found",
            ErrorKind::ScanLimit => "scan_limit",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Internal => "internal",
        }
    }

    /// Every kind, for the OpenAPI document.
    pub const ALL: [ErrorKind; 7] = [
        ErrorKind::BadRequest,
        ErrorKind::Unauthorized,
        ErrorKind::NotFound,
        ErrorKind::ScanLimit,
        ErrorKind::Timeout,
        ErrorKind::Unavailable,
        ErrorKind::Internal,
    ];

    /// The kind of an error answer made outside the API's handlers (axum's
    /// own rejections, 405): by its status.
    fn of_status(status: StatusCode) -> ErrorKind {
        match status {
            StatusCode::UNAUTHORIZED => ErrorKind::Unauthorized,
            StatusCode::NOT_FOUND => ErrorKind::NotFound,
            StatusCode::GATEWAY_TIMEOUT => ErrorKind::Timeout,
            StatusCode::SERVICE_UNAVAILABLE => ErrorKind::Unavailable,
            s if s.is_client_error() => ErrorKind::BadRequest,
            _ => ErrorKind::Internal,
        }
    }
}

/// The message of every internal error: the cause is in the log only.
const INTERNAL_MESSAGE: &str =
    "the query API failed to answer; its log has the cause under this request_id";

#[derive(Debug)]
pub struct ApiError {
    pub kind: ErrorKind,
    /// For the caller: what is wrong and what to do.
    pub message: String,
    /// For the log only (e.g. ClickHouse's text); never sent.
    pub cause: Option<String>,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            kind: ErrorKind::BadRequest,
            message: message.into(),
            cause: None,
        }
    }

    pub fn unauthorized() -> ApiError {
        ApiError {
            kind: ErrorKind::Unauthorized,
            message: "a valid bearer token is required (Authorization: Bearer <token>)".into(),
            cause: None,
        }
    }

    pub fn not_found() -> ApiError {
        ApiError {
            kind: ErrorKind::NotFound,
            message: "no such endpoint; see /api/v1/openapi.json".into(),
            cause: None,
        }
    }

    /// A fault on our side; `cause` goes to the log.
    pub fn internal(cause: impl Into<String>) -> ApiError {
        ApiError {
            kind: ErrorKind::Internal,
            message: INTERNAL_MESSAGE.into(),
            cause: Some(cause.into()),
        }
    }
}

/// ClickHouse codes that, on the API's reads, mean our statement, our row
/// types or our configuration is wrong (names as in ClickHouse's
/// `ErrorCodes.cpp`): a retry will not help, an operator or a fix must.
const INTERNAL_CODES: &[u32] = &[
    16,  // NO_SUCH_COLUMN_IN_TABLE
    42,  // NUMBER_OF_ARGUMENTS_DOESNT_MATCH
    43,  // ILLEGAL_TYPE_OF_ARGUMENT
    46,  // UNKNOWN_FUNCTION
    47,  // UNKNOWN_IDENTIFIER
    62,  // SYNTAX_ERROR
    81,  // UNKNOWN_DATABASE (a wrong --database: not an outage to wait out)
    115, // UNKNOWN_SETTING
    164, // READONLY (the user may not set the API's limits)
    192, // UNKNOWN_USER
    193, // WRONG_PASSWORD
    215, // NOT_AN_AGGREGATE
    291, // DATABASE_ACCESS_DENIED
    497, // ACCESS_DENIED
    516, // AUTHENTICATION_FAILED
];

/// The kind of a failed ClickHouse read.
pub fn kind_of(e: &clickhouse::error::Error) -> ErrorKind {
    use clickhouse::error::Error as E;
    // The response did not decode into our row types, or the request we
    // built was refused before it left: our bug, not an outage.
    let ours = matches!(
        e,
        E::InvalidParams(_)
            | E::RowNotFound
            | E::SequenceMustHaveLength
            | E::DeserializeAnyNotSupported
            | E::NotEnoughData
            | E::InvalidUtf8Encoding(_)
            | E::InvalidTagEncoding(_)
            | E::VariantDiscriminatorIsOutOfBound(_)
            | E::Custom(_)
            | E::InvalidColumnsHeader(_)
            | E::SchemaMismatch(_)
            | E::Unsupported(_)
    );
    if ours || code_of(e).is_some_and(|c| INTERNAL_CODES.contains(&c)) {
        return ErrorKind::Internal;
    }
    // TOO_SLOW: the server's estimate says the query would exceed
    // max_execution_time.
    if code_of(e) == Some(160) {
        return ErrorKind::Timeout;
    }
    match classify(e) {
        ErrorClass::ScanLimit => ErrorKind::ScanLimit,
        ErrorClass::Timeout => ErrorKind::Timeout,
        // The rows the server read are not what our statement expects.
        ErrorClass::Data => ErrorKind::Internal,
        ErrorClass::Unavailable => ErrorKind::Unavailable,
    }
}

impl From<clickhouse::error::Error> for ApiError {
    /// Classes as in [`kind_of`]; ClickHouse's text becomes the cause, for
    /// the log. Nothing is logged here: the edge logs once, with the request id.
    fn from(e: clickhouse::error::Error) -> ApiError {
        let kind = kind_of(&e);
        let message = match kind {
            ErrorKind::ScanLimit => {
                "the query would scan more rows than allowed (--max-rows-scanned): narrow the time range or add label filters"
            }
            ErrorKind::Timeout => {
                "the query took longer than allowed (--query-timeout-seconds): narrow the time range or add label filters"
            }
            ErrorKind::Unavailable => "ClickHouse is unavailable; retry later",
            _ => INTERNAL_MESSAGE,
        };
        ApiError {
            kind,
            message: message.into(),
            cause: Some(chain(&e)),
        }
    }
}

/// An error and its sources, `: `-joined (a source already in the text
/// above it is not repeated): "network error: … (Connect): tcp connect
/// error: Connection refused".
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// What an error answer is, for the edge: it adds the request id to the body
/// and logs the cause.
#[derive(Debug, Clone)]
struct ErrorDetails {
    kind: ErrorKind,
    message: String,
    cause: Option<String>,
}

fn body(kind: ErrorKind, message: &str, request_id: Option<&str>) -> serde_json::Value {
    let mut body = serde_json::json!({ "error": message, "kind": kind.as_str() });
    if let Some(id) = request_id {
        body["request_id"] = id.into();
    }
    body
}

/// Abandons a request that outlives `deadline` (its ClickHouse request is
/// dropped with it): 503 unavailable, as for a refused connection.
pub async fn deadline(
    axum::extract::State(deadline): axum::extract::State<std::time::Duration>,
    request: Request,
    next: Next,
) -> Response {
    match tokio::time::timeout(deadline, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError {
            kind: ErrorKind::Unavailable,
            message: "ClickHouse did not answer in time; retry later".into(),
            cause: Some(format!("no answer within {deadline:?}")),
        }
        .into_response(),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.kind.status(),
            Json(body(self.kind, &self.message, None)),
        )
            .into_response();
        if self.kind == ErrorKind::Unauthorized {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response.extensions_mut().insert(ErrorDetails {
            kind: self.kind,
            message: self.message,
            cause: self.cause,
        });
        response
    }
}

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Longest incoming request id taken as is.
const MAX_REQUEST_ID_LEN: usize = 64;

/// An incoming `x-request-id` worth keeping: 1 to 64 characters of
/// `A-Z a-z 0-9 . _ : -` (safe in logs and headers). Anything else is replaced.
fn incoming_id(headers: &HeaderMap) -> Option<String> {
    let id = headers.get(REQUEST_ID_HEADER)?.to_str().ok()?;
    let ok = (1..=MAX_REQUEST_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    ok.then(|| id.to_string())
}

/// A new request id: 16 hex digits, distinct within the process (a counter
/// hashed with a key chosen at random per process, so ids of different
/// processes do not repeat each other's sequence).
fn new_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static KEY: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    let mut hasher = KEY
        .get_or_init(std::collections::hash_map::RandomState::new)
        .build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    format!("{:016x}", hasher.finish())
}

/// Largest body of a foreign error answer (axum's rejections) read as its message.
const MAX_FOREIGN_MESSAGE: usize = 1024;

/// The edge: gives every request an id (the caller's `x-request-id` when it
/// is sane, else a new one), returns it in `x-request-id` on every answer,
/// makes every error answer the JSON error with that id, and logs each error
/// once with its cause.
pub async fn request_id(request: Request, next: Next) -> Response {
    let id = incoming_id(request.headers()).unwrap_or_else(new_id);
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let mut response = next.run(request).await;
    let status = response.status();
    if status.is_client_error() || status.is_server_error() {
        let details = match response.extensions_mut().remove::<ErrorDetails>() {
            Some(d) => d,
            None => foreign_error(&mut response).await,
        };
        let cause = details.cause.as_deref().unwrap_or("");
        let kind = details.kind.as_str();
        let status = status.as_u16();
        match details.kind {
            ErrorKind::Internal => {
                tracing::error!(request_id = %id, %method, %path, status, kind, cause, "request failed")
            }
            ErrorKind::Unavailable | ErrorKind::Timeout => {
                tracing::warn!(request_id = %id, %method, %path, status, kind, cause, "request failed")
            }
            _ => {
                tracing::info!(request_id = %id, %method, %path, status, kind, cause, "request failed")
            }
        }
        let json = body(details.kind, &details.message, Some(&id)).to_string();
        let (mut parts, _) = response.into_parts();
        parts.headers.remove(header::CONTENT_LENGTH);
        parts.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response = Response::from_parts(parts, Body::from(json));
    }
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

/// An error answer not made by [`ApiError`] (axum's extractor rejections,
/// 405): its kind by status, its plain-text body (axum's own words about the
/// request) as the message.
async fn foreign_error(response: &mut Response) -> ErrorDetails {
    let status = response.status();
    let kind = ErrorKind::of_status(status);
    let body = std::mem::take(response.body_mut());
    let text = axum::body::to_bytes(body, MAX_FOREIGN_MESSAGE)
        .await
        .ok()
        .and_then(|b| String::from_utf8(b.to_vec()).ok())
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty());
    if kind == ErrorKind::Internal {
        return ErrorDetails {
            kind,
            message: INTERNAL_MESSAGE.into(),
            cause: text,
        };
    }
    let message = text.unwrap_or_else(|| match status {
        StatusCode::METHOD_NOT_ALLOWED => "method not allowed; the API answers GET".into(),
        s => s
            .canonical_reason()
            .unwrap_or("the request was refused")
            .to_string(),
    });
    ErrorDetails {
        kind,
        message,
        cause: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clickhouse::error::Error as E;

    #[test]
    fn clickhouse_errors_map_by_class() {
        let bad = |text: &str| kind_of(&E::BadResponse(text.into()));
        assert_eq!(
            bad("Code: 158. DB::Exception: Limit for rows"),
            ErrorKind::ScanLimit
        );
        assert_eq!(
            bad("Code: 159. DB::Exception: Timeout exceeded"),
            ErrorKind::Timeout
        );
        assert_eq!(
            bad("Code: 252. DB::Exception: Too many parts"),
            ErrorKind::Unavailable
        );
        assert_eq!(
            bad("Code: 60. DB::Exception: Table doesn't exist"),
            ErrorKind::Unavailable
        );
        assert_eq!(bad("<html>502 Bad Gateway</html>"), ErrorKind::Unavailable);
        assert_eq!(
            bad("Code: 516. DB::Exception: Authentication failed"),
            ErrorKind::Internal
        );
        assert_eq!(
            bad("Code: 62. DB::Exception: Syntax error"),
            ErrorKind::Internal
        );
        assert_eq!(
            bad("Code: 53. DB::Exception: Type mismatch"),
            ErrorKind::Internal
        );
        assert_eq!(kind_of(&E::NotEnoughData), ErrorKind::Internal);
        assert_eq!(kind_of(&E::Custom("bad".into())), ErrorKind::Internal);
        assert_eq!(kind_of(&E::TimedOut), ErrorKind::Timeout);
        assert_eq!(
            kind_of(&E::Network("refused".into())),
            ErrorKind::Unavailable
        );
    }

    #[test]
    fn the_cause_is_kept_for_the_log_and_out_of_the_message() {
        let e = ApiError::from(E::BadResponse(
            "Code: 252. DB::Exception: Too many parts (600). Merges are slower".into(),
        ));
        assert_eq!(e.kind, ErrorKind::Unavailable);
        assert!(!e.message.contains("Code:"), "{}", e.message);
        assert!(
            e.cause
                .as_deref()
                .is_some_and(|c| c.contains("Too many parts"))
        );
    }

    #[test]
    fn incoming_ids_are_kept_only_when_sane() {
        let id = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(REQUEST_ID_HEADER, HeaderValue::from_str(v).expect("header"));
            incoming_id(&h)
        };
        assert_eq!(id("abc-123_x.y:z").as_deref(), Some("abc-123_x.y:z"));
        assert_eq!(id(""), None);
        assert_eq!(id("has space"), None);
        assert_eq!(id("quote\"d"), None);
        assert_eq!(id(&"a".repeat(65)), None);
        assert_eq!(id(&"a".repeat(64)).map(|s| s.len()), Some(64));
        assert_ne!(new_id(), new_id());
        assert_eq!(new_id().len(), 16);
    }
}
