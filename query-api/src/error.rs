//! API errors: a status and a JSON body `{"error": "..."}` that says what is wrong.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    pub fn unauthorized() -> ApiError {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            message: "a valid bearer token is required (Authorization: Bearer <token>)".into(),
        }
    }
}

impl From<clickhouse::error::Error> for ApiError {
    /// Limits the server enforces are the caller's to fix; anything else is
    /// ClickHouse being unavailable (classes: `javelin_schema::clickhouse_error`).
    fn from(e: clickhouse::error::Error) -> ApiError {
        use javelin_schema::clickhouse_error::{ErrorClass, classify};
        match classify(&e) {
            ErrorClass::ScanLimit => ApiError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                message: "the query would scan more rows than allowed (--max-rows-scanned): narrow the time range or add label filters".into(),
            },
            ErrorClass::Timeout => ApiError {
                status: StatusCode::GATEWAY_TIMEOUT,
                message: "the query took longer than allowed (--query-timeout-seconds): narrow the time range or add label filters".into(),
            },
            ErrorClass::Data | ErrorClass::Unavailable => {
                tracing::warn!(error = %e, "ClickHouse query failed");
                ApiError {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    message: format!("ClickHouse unavailable: {e}"),
                }
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}
