//! Who is calling: the admin (a token from configuration), a provider (its API key) or a patient
//! (their token). Secrets are stored as SHA-256 hashes; the clear value is shown once, at creation.

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::ConnectInfo;
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use medpay_models::ProviderId;
pub use medpay_store::PatientCredential;
use rand::RngCore;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

pub const PROVIDER_KEY_PREFIX: &str = "mpk_";
pub const PATIENT_TOKEN_PREFIX: &str = "mpt_";
pub const ADMIN_TOKEN_PREFIX: &str = "mpa_";
/// A person's token (`POST /v1/people`).
pub const PERSON_TOKEN_PREFIX: &str = "mpp_";

/// What a person may do: `admin` everything the admin token may; `analyst` the risk routes
/// (rules, lists, labels, reviews, models); `support` reads payments and conversations and
/// answers patients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    Analyst,
    Support,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Admin, Role::Analyst, Role::Support];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Analyst => "analyst",
            Role::Support => "support",
        }
    }

    pub fn parse(raw: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.as_str() == raw)
    }
}
/// Longest bearer token looked at.
const TOKEN_LENGTH_MAX: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal {
    Admin,
    /// A risk analyst: rules, lists, labels, models.
    Analyst,
    Provider(ProviderId),
    /// A patient, with a credential that opens all of their own data or, when it was issued
    /// through a provider (`provider`), only what concerns that provider.
    Patient(PatientCredential),
    /// A person with an account of their own, by id.
    Person(uuid::Uuid, Role),
}

/// What a provider-scoped patient credential is told when it asks for more than its provider's
/// part of the patient's data (`credential_scoped`).
pub fn scoped_refusal(message: &str) -> ApiError {
    ApiError::new(axum::http::StatusCode::FORBIDDEN, "credential_scoped", message.to_owned())
}

impl Principal {
    /// The scope of this caller's idempotency keys and rate limit.
    pub fn scope(&self) -> String {
        match self {
            Principal::Admin => "admin".to_owned(),
            Principal::Analyst => "analyst".to_owned(),
            Principal::Provider(id) => format!("provider:{id}"),
            // A scoped credential's idempotency keys are its own: a replay never shows it another
            // scope's payment.
            Principal::Patient(PatientCredential { patient, provider: None }) => format!("patient:{patient}"),
            Principal::Patient(PatientCredential { patient, provider: Some(provider) }) => {
                format!("patient:{patient}@provider:{provider}")
            }
            Principal::Person(id, _) => format!("person:{id}"),
        }
    }

    /// The provider whose view of a patient this caller gets: a provider's own, or the one a
    /// patient's credential is scoped to; None for the patient's own record.
    pub fn seen_through(&self) -> Option<ProviderId> {
        match self {
            Principal::Provider(provider) => Some(*provider),
            Principal::Patient(credential) => credential.provider,
            Principal::Admin | Principal::Analyst | Principal::Person(..) => None,
        }
    }

    /// Who did it, as the audit log and the registry record it.
    pub fn actor(&self) -> String {
        match self {
            Principal::Admin => "admin".to_owned(),
            Principal::Analyst => "analyst".to_owned(),
            other => other.scope(),
        }
    }

    /// The platform's own people (admin, analysts, support), who see every provider's data.
    pub fn is_staff(&self) -> bool {
        matches!(self, Principal::Admin | Principal::Analyst | Principal::Person(..))
    }

    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self {
            Principal::Admin | Principal::Person(_, Role::Admin) => Ok(()),
            _ => Err(ApiError::forbidden("this endpoint is for the admin")),
        }
    }

    /// Risk analysts, and the admin.
    pub fn require_analyst(&self) -> Result<(), ApiError> {
        match self {
            Principal::Admin | Principal::Analyst | Principal::Person(_, Role::Admin | Role::Analyst) => Ok(()),
            _ => Err(ApiError::forbidden("this endpoint is for risk analysts")),
        }
    }
}

/// A new secret with `prefix`: 32 random bytes in hex.
pub fn new_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

/// Compares without stopping at the first difference, so timing says nothing of the secret.
pub(crate) fn constant_time_eq(left: &[u8], right: &[u8]) -> bool {
    left.len() == right.len() && left.iter().zip(right).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Principal, ApiError> {
        // An address that failed too often is refused before its token is even looked at: guessing
        // tokens costs the guesser, not the store.
        let Ok(ClientAddress(client)) = ClientAddress::from_request_parts(parts, state).await;
        if let Some(client) = client
            && state.auth_failures.exhausted(client)
        {
            metrics::counter!("medpay_auth_refused_total").increment(1);
            return Err(ApiError::too_many_auth_failures(AUTH_FAILURE_WINDOW_MS));
        }
        // Only a credential that was presented and is wrong counts: asking without one costs no
        // lookup, and a browser's first unauthenticated request must not lock its address out.
        let presented = bearer(&parts.headers).is_some() || parts.headers.contains_key(AUTHORIZATION);
        match authenticate(parts, state).await {
            Err(error) if error.status == axum::http::StatusCode::UNAUTHORIZED => {
                if let Some(client) = client.filter(|_| presented) {
                    state.auth_failures.record(client);
                }
                metrics::counter!("medpay_auth_failures_total").increment(1);
                Err(error)
            }
            other => other,
        }
    }
}

/// Whom a request's failed authentications count against (see `client_key`); none when the
/// server was not told the peer's address.
pub struct ClientAddress(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<ClientAddress, Self::Rejection> {
        Ok(ClientAddress(parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|info| client_key(info.0.ip()))))
    }
}

/// The window over which an address's failed authentications are counted.
pub const AUTH_FAILURE_WINDOW_MS: u64 = 60_000;
/// Addresses whose failures are remembered at once (the oldest are forgotten first).
pub const AUTH_FAILURE_ADDRESSES_MAX: u64 = 100_000;

/// Whom failures are counted against: an IPv4 address, or an IPv6 /64 (one host's whole range).
pub(crate) fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Failed authentications per client address in a fixed window (in this process: each node
/// counts its own).
pub struct AuthFailures {
    per_window: u32,
    counts: moka::sync::Cache<IpAddr, Arc<AtomicU32>>,
}

impl AuthFailures {
    pub fn new(per_window: u32) -> AuthFailures {
        AuthFailures {
            per_window,
            counts: moka::sync::Cache::builder()
                .max_capacity(AUTH_FAILURE_ADDRESSES_MAX)
                .time_to_live(Duration::from_millis(AUTH_FAILURE_WINDOW_MS))
                .build(),
        }
    }

    pub fn exhausted(&self, client: IpAddr) -> bool {
        self.counts.get(&client).is_some_and(|count| count.load(Ordering::Relaxed) >= self.per_window)
    }

    pub fn record(&self, client: IpAddr) {
        let count = self.counts.get_with(client, || Arc::new(AtomicU32::new(0)));
        if count.fetch_add(1, Ordering::Relaxed) + 1 == self.per_window {
            tracing::warn!(client = %client, failures = self.per_window, "too many failed authentications; refusing this address for a minute");
        }
    }
}

/// The WebSocket subprotocol that carries a bearer token from a browser, which cannot set
/// headers on a WebSocket: `new WebSocket(url, ["medpay.bearer", token])` sends
/// `Sec-WebSocket-Protocol: medpay.bearer, <token>` (never the URL, which lands in logs). The
/// server answers with `medpay.bearer` alone.
pub const WEBSOCKET_BEARER_PROTOCOL: &str = "medpay.bearer";

/// The bearer credential a request carries, if it has a well-formed one: the `Authorization`
/// header, or a WebSocket handshake's `medpay.bearer` subprotocol.
pub(crate) fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    let header = headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    header
        .or_else(|| {
            let protocols = headers.get(axum::http::header::SEC_WEBSOCKET_PROTOCOL)?.to_str().ok()?;
            let mut offered = protocols.split(',').map(str::trim);
            (offered.next()? == WEBSOCKET_BEARER_PROTOCOL).then(|| offered.next()).flatten()
        })
        .filter(|token| !token.is_empty() && token.len() <= TOKEN_LENGTH_MAX)
}

async fn authenticate(parts: &mut Parts, state: &AppState) -> Result<Principal, ApiError> {
    let token = bearer(&parts.headers).ok_or_else(ApiError::unauthorized)?;
    let analyst = state
        .config
        .analyst_token
        .as_deref()
        .is_some_and(|analyst| constant_time_eq(token.as_bytes(), analyst.as_bytes()));
    let principal = if constant_time_eq(token.as_bytes(), state.admin_token.as_bytes()) {
        Principal::Admin
    } else if analyst {
        Principal::Analyst
    } else if token.starts_with(PROVIDER_KEY_PREFIX) {
        let hash = medpay_store::sha256_hex(token.as_bytes());
        Principal::Provider(state.lookups.provider_by_key_hash(&hash).await?.ok_or_else(ApiError::unauthorized)?)
    } else if token.starts_with(PERSON_TOKEN_PREFIX) {
        let hash = medpay_store::sha256_hex(token.as_bytes());
        let person = state
            .store
            .person_by_token_hash(&hash, medpay_store::now_ms())
            .await?
            .ok_or_else(ApiError::unauthorized)?;
        let id = person.id.parse().map_err(|_| ApiError::internal("a person's id is not a UUID"))?;
        let role = Role::parse(&person.role).ok_or_else(|| ApiError::internal("a person's role is unknown"))?;
        Principal::Person(id, role)
    } else if token.starts_with(crate::portal::SESSION_TOKEN_PREFIX) {
        let hash = medpay_store::sha256_hex(token.as_bytes());
        let patient = state.store.patient_by_session_hash(&hash, medpay_store::now_ms()).await?;
        Principal::Patient(patient.ok_or_else(ApiError::unauthorized)?)
    } else if token.starts_with(PATIENT_TOKEN_PREFIX) {
        let hash = medpay_store::sha256_hex(token.as_bytes());
        Principal::Patient(state.lookups.patient_by_token_hash(&hash).await?.ok_or_else(ApiError::unauthorized)?)
    } else {
        return Err(ApiError::unauthorized());
    };
    let limit = state.config.limits.requests_per_key_per_minute;
    state.rate_limit(&format!("key:{}", principal.scope()), limit).await?;
    Ok(principal)
}
