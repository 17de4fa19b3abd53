//! The one error type of the HTTP edge: a stable code, a clear message, the right status. Server
//! errors say nothing of their cause to the client; the cause goes to the log in the request span.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after_seconds: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable code, e.g. `invalid_cpf`.
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), retry_after_seconds: None }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "a valid bearer token is required")
    }

    /// 429: this client address failed to authenticate too often; its tokens are not looked at.
    pub fn too_many_auth_failures(retry_after_ms: u64) -> ApiError {
        ApiError {
            retry_after_seconds: Some(retry_after_ms.div_ceil(1_000).max(1)),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_auth_failures",
                "too many failed authentications from this address; retry later",
            )
        }
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, code, message)
    }

    pub fn rate_limited(retry_after_ms: u64) -> ApiError {
        ApiError {
            retry_after_seconds: Some(retry_after_ms.div_ceil(1_000).max(1)),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "too many requests; retry later")
        }
    }

    /// A failure of ours: logged with its cause, reported without it.
    /// This credential (or client address) has its whole share of the server in flight.
    pub fn tenant_busy() -> ApiError {
        ApiError {
            retry_after_seconds: Some(1),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "tenant_busy",
                "too many requests of this credential are in progress; retry when some have finished",
            )
        }
    }

    pub fn internal(cause: impl std::fmt::Display) -> ApiError {
        tracing::error!(%cause, "internal error");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; it has been logged")
    }

    pub fn unavailable(cause: impl std::fmt::Display) -> ApiError {
        tracing::warn!(%cause, "service unavailable");
        ApiError {
            retry_after_seconds: Some(1),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "temporarily unavailable; retry with the same Idempotency-Key",
            )
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        metrics::counter!("medpay_http_errors_total", "code" => self.code).increment(1);
        let body = ErrorBody { error: ErrorDetail { code: self.code.to_owned(), message: self.message } };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after_seconds {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<medpay_store::StoreError> for ApiError {
    fn from(error: medpay_store::StoreError) -> ApiError {
        ApiError::internal(error)
    }
}

impl From<medpay_actors::CoreError> for ApiError {
    fn from(error: medpay_actors::CoreError) -> ApiError {
        use medpay_actors::CoreError;
        match error {
            CoreError::Timeout(_) | CoreError::Crashed(_) | CoreError::Unavailable(_) => ApiError::unavailable(error),
            CoreError::AlreadyExists => ApiError::conflict("payment_exists", "the payment exists already"),
            // Another node committed a payment under the same key first (nodes that share no
            // Redis for their in-flight claims): nothing of this one was written.
            CoreError::Store(medpay_store::StoreError::Conflict("idempotency key")) => ApiError::conflict(
                "idempotency_key_in_use",
                "a request with this Idempotency-Key was committed meanwhile; retry to get its answer",
            ),
            CoreError::Store(_) | CoreError::Invariant(_) => ApiError::internal(error),
        }
    }
}

/// Turns axum's JSON and query rejections into our error shape.
pub fn rejection(message: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request("invalid_request", message.to_string())
}
