//! People with their own identities: the admin creates accounts for admins, analysts and support
//! agents, each with their own tokens (hashed, expiring, rotated and revoked here); every write a
//! person makes on the risk routes goes into the append-only audit log, readable by admins; a
//! review case is claimed by one person at a time.

use crate::auth::{PERSON_TOKEN_PREFIX, Principal, Role, new_secret};
use crate::dto::timestamp;
use crate::error::{ApiError, ErrorBody, rejection};
use crate::state::AppState;
use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use medpay_store::{AuditEntry, CaseClaim, PersonRecord, PersonToken, StoreError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A token lives this long unless asked otherwise (1 to 365 days).
pub const TOKEN_DAYS_DEFAULT: i64 = 90;
/// Longest name a person may have.
pub(crate) const PERSON_NAME_LENGTH_MAX: usize = 200;
/// A day, for token, link and retention lives.
pub(crate) const DAY_MS: i64 = 24 * 60 * 60 * 1_000;
/// A claim nobody acted on for this long may be taken by another person.
pub const CLAIM_TTL_MS: i64 = 30 * 60 * 1_000;

/// An audit entry of `principal`'s write, made now: passed to the store's write, it commits with
/// it or not at all.
pub fn audit_entry(
    principal: Principal,
    action: &str,
    target: &str,
    before: Option<serde_json::Value>,
    after: Option<serde_json::Value>,
) -> AuditEntry {
    AuditEntry {
        id: uuid::Uuid::now_v7().to_string(),
        at_ms: medpay_store::now_ms(),
        actor: principal.actor(),
        action: action.to_owned(),
        target: target.to_owned(),
        before,
        after,
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PersonView {
    pub id: String,
    pub name: String,
    pub email: String,
    /// `admin`, `analyst` or `support`.
    pub role: String,
    pub created_by: String,
    pub created_at: String,
    pub tokens: Vec<TokenView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenView {
    pub id: String,
    pub created_at: String,
    pub expires_at: String,
    pub revoked_at: Option<String>,
}

impl From<&PersonToken> for TokenView {
    fn from(token: &PersonToken) -> TokenView {
        TokenView {
            id: token.id.clone(),
            created_at: timestamp(token.created_at_ms),
            expires_at: timestamp(token.expires_at_ms),
            revoked_at: token.revoked_at_ms.map(timestamp),
        }
    }
}

fn view(person: PersonRecord, tokens: &[PersonToken]) -> PersonView {
    PersonView {
        id: person.id,
        name: person.name,
        email: person.email,
        role: person.role,
        created_by: person.created_by,
        created_at: timestamp(person.created_at_ms),
        tokens: tokens.iter().map(TokenView::from).collect(),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePerson {
    #[schema(schema_with = crate::schema::person_name)]
    pub name: String,
    #[schema(schema_with = crate::schema::email)]
    pub email: String,
    #[schema(schema_with = crate::schema::role)]
    pub role: String,
    #[schema(schema_with = crate::schema::token_days)]
    pub expires_in_days: Option<i64>,
}

/// A token, shown this once: the store keeps only its SHA-256.
#[derive(Debug, Serialize, ToSchema)]
pub struct NewToken {
    pub person_id: String,
    pub token_id: String,
    pub token: String,
    pub expires_at: String,
}

fn new_token(person: &str, days: Option<i64>, now_ms: i64) -> Result<(PersonToken, String), ApiError> {
    let days = days.unwrap_or(TOKEN_DAYS_DEFAULT);
    if !(1..=365).contains(&days) {
        return Err(ApiError::bad_request("invalid_expiry", "expires_in_days is 1 to 365"));
    }
    let clear = new_secret(PERSON_TOKEN_PREFIX);
    let token = PersonToken {
        id: uuid::Uuid::now_v7().to_string(),
        person_id: person.to_owned(),
        token_hash: medpay_store::sha256_hex(clear.as_bytes()),
        created_at_ms: now_ms,
        expires_at_ms: now_ms + days * DAY_MS,
        revoked_at_ms: None,
    };
    Ok((token, clear))
}

#[utoipa::path(post, path = "/v1/people", tag = "people", request_body = CreatePerson, security(("bearer" = [])),
    responses((status = 201, body = NewToken, description = "created, with its first token (shown this once)"),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "`person_exists`: that e-mail has an account")))]
pub async fn create_person(
    State(state): State<AppState>,
    principal: Principal,
    body: Result<Json<CreatePerson>, JsonRejection>,
) -> Result<(StatusCode, Json<NewToken>), ApiError> {
    principal.require_admin()?;
    let Json(body) = body.map_err(rejection)?;
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > PERSON_NAME_LENGTH_MAX {
        return Err(ApiError::bad_request(
            "invalid_name",
            format!("name needs 1 to {PERSON_NAME_LENGTH_MAX} characters"),
        ));
    }
    let email = crate::parties::email(&body.email)?.to_lowercase();
    let role = Role::parse(&body.role)
        .ok_or_else(|| ApiError::bad_request("invalid_role", "role is admin, analyst or support"))?;
    let now = medpay_store::now_ms();
    let person = PersonRecord {
        id: uuid::Uuid::now_v7().to_string(),
        name: name.to_owned(),
        email,
        role: role.as_str().to_owned(),
        created_by: principal.actor(),
        created_at_ms: now,
        disabled_at_ms: None,
    };
    let (token, clear) = new_token(&person.id, body.expires_in_days, now)?;
    let after = serde_json::json!({"name": person.name, "role": person.role, "token_id": token.id});
    let entry = audit_entry(principal, "person.create", &format!("person:{}", person.id), None, Some(after));
    match state.store.insert_person(&person, &token, &entry).await {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => {
            return Err(ApiError::conflict("person_exists", "a person with this e-mail has an account"));
        }
        Err(error) => return Err(error.into()),
    }
    tracing::info!(person_id = %person.id, role = role.as_str(), by = %principal.actor(), "person created");
    Ok((
        StatusCode::CREATED,
        Json(NewToken {
            person_id: person.id,
            token_id: token.id,
            token: clear,
            expires_at: timestamp(token.expires_at_ms),
        }),
    ))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PeopleList {
    pub data: Vec<PersonView>,
}

#[utoipa::path(get, path = "/v1/people", tag = "people", security(("bearer" = [])),
    responses((status = 200, body = PeopleList, description = "every person, with their tokens (never the tokens themselves)"),
        (status = 403, body = ErrorBody)))]
pub async fn list_people(State(state): State<AppState>, principal: Principal) -> Result<Json<PeopleList>, ApiError> {
    principal.require_admin()?;
    let mut data = Vec::new();
    for person in state.store.people().await? {
        let tokens = state.store.person_tokens(&person.id).await?;
        data.push(view(person, &tokens));
    }
    Ok(Json(PeopleList { data }))
}

/// The admin, or the person themself.
fn may_manage(principal: Principal, person: &str) -> Result<(), ApiError> {
    match principal {
        Principal::Admin | Principal::Person(_, Role::Admin) => Ok(()),
        Principal::Person(own, _) if own.to_string() == person => Ok(()),
        _ => Err(ApiError::forbidden("a person's tokens are theirs and the admin's to manage")),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateToken {
    /// End every other live token of this person now (a rotation).
    #[serde(default)]
    pub revoke_others: bool,
    #[schema(schema_with = crate::schema::token_days)]
    pub expires_in_days: Option<i64>,
}

#[utoipa::path(post, path = "/v1/people/{id}/tokens", tag = "people", request_body = RotateToken, security(("bearer" = [])),
    params(("id" = String, Path, description = "the person's id")),
    responses((status = 201, body = NewToken, description = "a new token, shown this once"),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn add_token(
    State(state): State<AppState>,
    principal: Principal,
    id: Result<Path<String>, PathRejection>,
    body: Result<Json<RotateToken>, JsonRejection>,
) -> Result<(StatusCode, Json<NewToken>), ApiError> {
    let Path(id) = id.map_err(rejection)?;
    may_manage(principal, &id)?;
    let Json(body) = body.map_err(rejection)?;
    state.store.person(&id).await?.ok_or_else(|| ApiError::not_found("person_not_found", "no such person"))?;
    let (token, clear) = new_token(&id, body.expires_in_days, medpay_store::now_ms())?;
    let after = serde_json::json!({"token_id": token.id, "revoked_others": body.revoke_others});
    let entry = audit_entry(principal, "person.token.create", &format!("person:{id}"), None, Some(after));
    state.store.add_person_token(&token, body.revoke_others, &entry).await?;
    Ok((
        StatusCode::CREATED,
        Json(NewToken { person_id: id, token_id: token.id, token: clear, expires_at: timestamp(token.expires_at_ms) }),
    ))
}

#[utoipa::path(delete, path = "/v1/people/{id}/tokens/{token_id}", tag = "people", security(("bearer" = [])),
    params(("id" = String, Path, description = "the person's id"), ("token_id" = String, Path, description = "the token's id")),
    responses((status = 204, description = "revoked: it authenticates nothing from now on"),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody, description = "`token_not_found`: no such live token")))]
pub async fn revoke_token(
    State(state): State<AppState>,
    principal: Principal,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let Path((id, token)) = path.map_err(rejection)?;
    may_manage(principal, &id)?;
    let before = Some(serde_json::json!({"token_id": token}));
    let entry = audit_entry(principal, "person.token.revoke", &format!("person:{id}"), before, None);
    if !state.store.revoke_person_token(&id, &token, &entry).await? {
        return Err(ApiError::not_found("token_not_found", "no such live token of this person"));
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only this actor's entries (`admin`, `analyst`, `person:{id}`).
    pub actor: Option<String>,
    /// 1 to 1000, 100 by default.
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditView {
    pub id: String,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    #[schema(value_type = Option<Object>)]
    pub before: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    pub after: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditList {
    pub data: Vec<AuditView>,
}

#[utoipa::path(get, path = "/v1/audit", tag = "people", security(("bearer" = [])), params(AuditQuery),
    responses((status = 200, body = AuditList, description = "newest first"), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub async fn audit_log(
    State(state): State<AppState>,
    principal: Principal,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<AuditList>, ApiError> {
    principal.require_admin()?;
    let Query(query) = query.map_err(rejection)?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=1_000).contains(&limit) {
        return Err(ApiError::bad_request("invalid_limit", "limit is 1 to 1000"));
    }
    let entries = state.store.audit(query.actor.as_deref(), limit).await?;
    let data = entries
        .into_iter()
        .map(|entry| AuditView {
            id: entry.id,
            at: timestamp(entry.at_ms),
            actor: entry.actor,
            action: entry.action,
            target: entry.target,
            before: entry.before,
            after: entry.after,
        })
        .collect();
    Ok(Json(AuditList { data }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ClaimView {
    pub case_id: String,
    pub claimed_by: String,
    pub claimed_at: String,
}

/// Whether a claim made at `claimed_at_ms` still holds at `now_ms`.
pub fn claim_holds(claimed_at_ms: i64, now_ms: i64) -> bool {
    claimed_at_ms >= now_ms - CLAIM_TTL_MS
}

fn claimed_by_another(by: &str, since_ms: i64) -> ApiError {
    ApiError::conflict("case_claimed", format!("claimed by {by} since {}", timestamp(since_ms)))
}

/// Refuses a case held by someone else (claimed less than `CLAIM_TTL_MS` ago).
pub async fn require_claim_or_free(state: &AppState, principal: Principal, case: &str) -> Result<(), ApiError> {
    if let Some((Some(by), Some(at))) = state.store.case_claim(case).await?
        && by != principal.actor()
        && claim_holds(at, medpay_store::now_ms())
    {
        return Err(claimed_by_another(&by, at));
    }
    Ok(())
}

#[utoipa::path(post, path = "/v1/reviews/{id}/claim", tag = "chat", security(("bearer" = [])),
    params(("id" = String, Path, description = "the review case's id")),
    responses((status = 200, body = ClaimView, description = "yours: nobody else decides it while you hold it (30 minutes from the last claim)"),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "`case_claimed`: someone else holds it")))]
pub async fn claim(
    State(state): State<AppState>,
    principal: Principal,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<ClaimView>, ApiError> {
    principal.require_analyst()?;
    let Path(id) = id.map_err(rejection)?;
    let now = medpay_store::now_ms();
    let by = principal.actor();
    let audit = audit_entry(principal, "review.claim", &format!("review_case:{id}"), None, None);
    match state.store.claim_case(&id, &by, now, now - CLAIM_TTL_MS, &audit).await? {
        CaseClaim::Held { claimed_at_ms } => {
            Ok(Json(ClaimView { case_id: id, claimed_by: by, claimed_at: timestamp(claimed_at_ms) }))
        }
        CaseClaim::Taken { by, since_ms } => Err(claimed_by_another(&by, since_ms)),
        CaseClaim::NoCase => Err(ApiError::not_found("review_case_not_found", "no open review case of this id")),
    }
}
