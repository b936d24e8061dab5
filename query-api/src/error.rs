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
    /// ClickHouse being unavailable.
    fn from(e: clickhouse::error::Error) -> ApiError {
        let text = e.to_string();
        let code = text
            .find("Code: ")
            .and_then(|i| text[i + 6..].split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|d| d.parse::<u32>().ok());
        match code {
            // TOO_MANY_ROWS, TOO_MANY_BYTES
            Some(158) | Some(307) => ApiError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                message: "the query would scan more rows than allowed (--max-rows-scanned): narrow the time range or add label filters".into(),
            },
            // TIMEOUT_EXCEEDED
            Some(159) => ApiError {
                status: StatusCode::GATEWAY_TIMEOUT,
                message: "the query took longer than allowed (--query-timeout-seconds): narrow the time range or add label filters".into(),
            },
            _ => {
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
