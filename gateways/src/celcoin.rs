//! Celcoin: PIX immediate (cob) and due-date (cobv) charges, boleto and card charges, each with
//! the split between the provider and the platform and, when asked, the provider's part held in
//! escrow until released; PIX devolução (refund); the statement used by reconciliation; and the
//! webhooks Celcoin sends (payment received, refund done, chargeback, MED claim).
//!
//! The request and response shapes follow Celcoin's public API documentation as its field names
//! go (`clientRequestId`, `transactionId`, `calendar.expiration`, `location.emv`, webhooks with
//! `RequestBody.TransactionType`); the sandbox in `celcoin_sandbox` speaks the same shapes. No live
//! Celcoin account was reachable from here, so a field the documentation leaves unclear follows
//! the sandbox.

use crate::resilience::{Breaker, Policy, TokenCache};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// How long an immediate PIX charge stays payable, unless the request says otherwise.
pub const PIX_EXPIRATION_SECONDS: i64 = 24 * 60 * 60;

#[derive(Debug, thiserror::Error)]
pub enum CelcoinError {
    #[error("Celcoin is not answering (circuit open); retry later")]
    CircuitOpen,
    #[error("Celcoin failed after {attempts} attempts: {last}")]
    Exhausted { attempts: u32, last: String },
    #[error("Celcoin refused the request: {0}")]
    Rejected(String),
    #[error("Celcoin answered something unexpected: {0}")]
    Protocol(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChargeMethod {
    Pix,
    Boleto,
    Card,
}

/// Who receives what of a charge, in centavos.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitPart {
    pub account: String,
    pub amount_centavos: i64,
}

#[derive(Debug, Clone)]
pub struct ChargeRequest {
    /// Ours, unique per charge: a retry with the same id never creates a second charge.
    pub client_request_id: String,
    pub method: ChargeMethod,
    pub amount_centavos: i64,
    /// A due date (ISO 8601) makes a PIX charge a cobv; boletos always have one.
    pub due_date: Option<String>,
    pub debtor_name: String,
    pub debtor_cpf: String,
    pub description: String,
    pub split: Vec<SplitPart>,
    pub escrow: bool,
    /// The card gateway's token of the card (card charges).
    pub card_token: Option<String>,
    /// Seconds an immediate PIX charge stays payable (`PIX_EXPIRATION_SECONDS` when unset).
    pub expiration_seconds: Option<i64>,
}

/// A charge as Celcoin holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    pub transaction_id: String,
    pub client_request_id: String,
    pub method: ChargeMethod,
    pub amount_centavos: i64,
    /// `ACTIVE`, `PAID`, `CANCELLED`.
    pub status: String,
    pub emv: Option<String>,
    pub linha_digitavel: Option<String>,
    pub barcode: Option<String>,
    pub expiration_seconds: Option<i64>,
    pub due_date: Option<String>,
}

/// One line of Celcoin's statement: what it holds of a charge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatementItem {
    pub transaction_id: String,
    pub client_request_id: String,
    pub amount: Reais,
    pub paid_amount: Reais,
    pub refunded_amount: Reais,
    pub status: String,
    pub escrow: bool,
    pub escrow_released: bool,
}

/// Money that left a paid charge, as Celcoin lists it on the charge (`returns` of the charge's
/// query): a refund we asked for, a card chargeback or a PIX MED return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Return {
    pub transaction_id: String,
    pub kind: NoticeKind,
    pub amount_centavos: i64,
}

/// The returns a charge's query lists; entries Celcoin may add in another shape are skipped.
pub fn returns_of(charge: &serde_json::Value) -> Vec<Return> {
    let Some(returns) = charge.get("returns").and_then(|v| v.as_array()) else { return Vec::new() };
    returns
        .iter()
        .filter_map(|item| {
            let kind = NoticeKind::of_transaction_type(item.get("transactionType")?.as_str()?)
                .filter(|kind| *kind != NoticeKind::Paid)?;
            Some(Return {
                transaction_id: item.get("transactionId")?.as_str()?.to_owned(),
                kind,
                amount_centavos: item.get("amount").and_then(centavos_of).filter(|c| *c > 0)?,
            })
        })
        .collect()
}

/// A webhook Celcoin sent, as parsed from its body.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    /// Celcoin's id of this notification; a duplicate delivery carries the same id.
    pub id: String,
    pub kind: NoticeKind,
    /// The charge it is about.
    pub charge_transaction_id: String,
    pub amount_centavos: i64,
    /// For a refund: our client code of the refund.
    pub client_code: Option<String>,
    /// For a refund: Celcoin's id of the reversal.
    pub reversal_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeKind {
    /// `RECEIVEPIX`, `BOLETO_PAID`, `CARD_CAPTURED`: the charge was paid.
    Paid,
    /// `PIX_REVERSAL`: a refund we asked for was sent to the payer.
    RefundDone,
    /// `CHARGEBACK`: a card payment was disputed and taken back.
    Chargeback,
    /// `MED_RETURN`: a PIX MED claim returned money to the payer.
    Med,
}

impl NoticeKind {
    pub fn transaction_type(self) -> &'static str {
        match self {
            NoticeKind::Paid => "RECEIVEPIX",
            NoticeKind::RefundDone => "PIX_REVERSAL",
            NoticeKind::Chargeback => "CHARGEBACK",
            NoticeKind::Med => "MED_RETURN",
        }
    }

    /// The kind of a Celcoin `TransactionType` (each of the three ways a charge is paid is `Paid`).
    pub fn of_transaction_type(name: &str) -> Option<NoticeKind> {
        match name {
            "RECEIVEPIX" | "BOLETO_PAID" | "CARD_CAPTURED" => Some(NoticeKind::Paid),
            "PIX_REVERSAL" => Some(NoticeKind::RefundDone),
            "CHARGEBACK" => Some(NoticeKind::Chargeback),
            "MED_RETURN" => Some(NoticeKind::Med),
            _ => None,
        }
    }
}

/// Most reais an amount may have (ten billion): anything above is not a payment.
const REAIS_MAX: i64 = 10_000_000_000;

/// Reais as Celcoin writes them (a JSON number, or a string, with at most two decimals) to
/// centavos, exactly: read from the number's decimal text, never multiplied as a float. A third
/// decimal, an exponent, a sign or anything else is not an amount.
pub fn centavos_of(value: &serde_json::Value) -> Option<i64> {
    // serde_json writes a number back in the shortest form that reads as the same double, which
    // for amounts of up to 15 digits is the decimal that was sent.
    let text = match value {
        serde_json::Value::Number(number) => number.to_string(),
        serde_json::Value::String(text) => text.clone(),
        _ => return None,
    };
    let (whole, fraction) = text.split_once('.').unwrap_or((text.as_str(), ""));
    let digits = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || fraction.len() > 2 || !digits(fraction) {
        return None;
    }
    let whole: i64 = whole.parse().ok().filter(|reais| *reais <= REAIS_MAX)?;
    let fraction: i64 = format!("{fraction:0<2}").parse().ok()?;
    whole.checked_mul(100)?.checked_add(fraction)
}

/// An amount of reais in Celcoin's JSON, held as integer centavos.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reais(pub i64);

impl Serialize for Reais {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        reais_of(self.0).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Reais {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Reais, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        centavos_of(&value)
            .map(Reais)
            .ok_or_else(|| serde::de::Error::custom(format!("{value} is not an amount of reais")))
    }
}

/// Centavos as a JSON number of reais with two decimals.
pub fn reais_of(centavos: i64) -> serde_json::Value {
    let text = format!("{}.{:02}", centavos / 100, (centavos % 100).abs());
    serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
}

/// Parses a Celcoin webhook body.
pub fn parse_notice(body: &[u8]) -> Result<Notice, String> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|error| format!("not JSON: {error}"))?;
    let text = |pointer: &str| value.pointer(pointer).and_then(|v| v.as_str()).map(str::to_owned);
    let id = text("/Id").ok_or("no Id")?;
    let named = text("/TransactionType");
    let kind = named
        .as_deref()
        .and_then(NoticeKind::of_transaction_type)
        .ok_or_else(|| format!("unknown TransactionType {named:?}"))?;
    let amount = value.pointer("/RequestBody/Amount").ok_or("no RequestBody.Amount")?;
    let amount_centavos = centavos_of(amount).filter(|c| *c > 0).ok_or("RequestBody.Amount is not an amount")?;
    let charge = match kind {
        NoticeKind::Paid => text("/RequestBody/TransactionId"),
        _ => text("/RequestBody/OriginalTransactionId"),
    }
    .ok_or("no charge transaction id")?;
    Ok(Notice {
        id,
        kind,
        charge_transaction_id: charge,
        amount_centavos,
        client_code: text("/RequestBody/ClientCode"),
        reversal_id: match kind {
            NoticeKind::Paid => None,
            _ => text("/RequestBody/TransactionId"),
        },
    })
}

pub struct CelcoinClient {
    base: String,
    client_id: String,
    client_secret: String,
    /// The platform's PIX key, that charges are made out to.
    pix_key: String,
    http: reqwest::Client,
    policy: Policy,
    breaker: Breaker,
    token: TokenCache,
}

enum Outcome {
    Answer(StatusCode, serde_json::Value),
    /// No answer: the request may or may not have been carried out.
    Unknown(String),
}

impl CelcoinClient {
    pub fn new(
        base: &str,
        client_id: &str,
        client_secret: &str,
        pix_key: &str,
        policy: Policy,
    ) -> Result<CelcoinClient, CelcoinError> {
        let http = crate::resilience::http_client(&policy).map_err(CelcoinError::Protocol)?;
        Ok(CelcoinClient {
            base: base.trim_end_matches('/').to_owned(),
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            pix_key: pix_key.to_owned(),
            http,
            policy,
            breaker: Breaker::default(),
            token: TokenCache::default(),
        })
    }

    async fn access_token(&self, refresh: bool) -> Result<String, String> {
        if let Some(token) = self.token.fresh().filter(|_| !refresh) {
            return Ok(token);
        }
        let response = self
            .http
            .post(format!("{}/v5/token", self.base))
            .form(&[
                ("client_id", self.client_id.as_str()),
                ("client_secret", self.client_secret.as_str()),
                ("grant_type", "client_credentials"),
            ])
            .send()
            .await
            .map_err(|error| error.to_string())?;
        if !response.status().is_success() {
            return Err(format!("token: HTTP {}", response.status()));
        }
        let token: crate::resilience::TokenAnswer = response.json().await.map_err(|error| error.to_string())?;
        self.token.remember(&token.access_token, token.expires_in);
        Ok(token.access_token)
    }

    /// One request, no retry. A 401 gets a fresh token once.
    async fn send_once(&self, method: reqwest::Method, path: &str, body: Option<&serde_json::Value>) -> Outcome {
        let mut refresh = false;
        loop {
            let token = match self.access_token(refresh).await {
                Ok(token) => token,
                Err(error) => return Outcome::Unknown(error),
            };
            let mut request = self.http.request(method.clone(), format!("{}{path}", self.base)).bearer_auth(token);
            if let Some(body) = body {
                request = request.json(body);
            }
            match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    if status == StatusCode::UNAUTHORIZED && !refresh {
                        refresh = true;
                        continue;
                    }
                    let value = response.json().await.unwrap_or(serde_json::Value::Null);
                    return Outcome::Answer(status, value);
                }
                Err(error) => return Outcome::Unknown(error.to_string()),
            }
        }
    }

    /// A read, with the retry policy and the breaker.
    async fn read(&self, path: &str) -> Result<Option<serde_json::Value>, CelcoinError> {
        let mut last = String::new();
        for attempt in 1..=self.policy.attempts_max {
            if !self.breaker.allow() {
                return Err(CelcoinError::CircuitOpen);
            }
            match self.send_once(reqwest::Method::GET, path, None).await {
                Outcome::Answer(status, body) if status.is_success() => {
                    self.breaker.succeeded();
                    return Ok(Some(body));
                }
                Outcome::Answer(StatusCode::NOT_FOUND, _) => {
                    self.breaker.succeeded();
                    return Ok(None);
                }
                Outcome::Answer(status, body) if status.is_client_error() => {
                    self.breaker.succeeded();
                    return Err(CelcoinError::Rejected(message_of(&body, status)));
                }
                Outcome::Answer(status, _) => last = format!("HTTP {status}"),
                Outcome::Unknown(error) => last = error,
            }
            self.breaker.failed(&self.policy);
            if attempt < self.policy.attempts_max {
                tokio::time::sleep(self.policy.backoff(attempt)).await;
            }
        }
        Err(CelcoinError::Exhausted { attempts: self.policy.attempts_max, last })
    }

    /// A write that Celcoin makes idempotent by an id of ours. When the answer is lost (time-out,
    /// 5xx), `lookup` asks Celcoin whether it was carried out before trying again, so the write
    /// happens at most once.
    async fn write_once<F, Fut>(
        &self,
        path: &str,
        body: &serde_json::Value,
        lookup: F,
    ) -> Result<serde_json::Value, CelcoinError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Option<serde_json::Value>, CelcoinError>>,
    {
        let mut last = String::new();
        for attempt in 1..=self.policy.attempts_max {
            if !self.breaker.allow() {
                return Err(CelcoinError::CircuitOpen);
            }
            match self.send_once(reqwest::Method::POST, path, Some(body)).await {
                Outcome::Answer(status, answer) if status.is_success() => {
                    self.breaker.succeeded();
                    return Ok(answer);
                }
                Outcome::Answer(StatusCode::CONFLICT, _) => {
                    // Done before (an earlier attempt whose answer was lost): read it back.
                    self.breaker.succeeded();
                    return lookup().await?.ok_or_else(|| CelcoinError::Protocol("conflict, but nothing found".into()));
                }
                Outcome::Answer(status, answer) if status.is_client_error() => {
                    self.breaker.succeeded();
                    return Err(CelcoinError::Rejected(message_of(&answer, status)));
                }
                Outcome::Answer(status, _) => last = format!("HTTP {status}"),
                Outcome::Unknown(error) => last = error,
            }
            self.breaker.failed(&self.policy);
            tracing::warn!(path, attempt, error = %last, "Celcoin write unanswered; asking whether it was done");
            if let Ok(Some(found)) = lookup().await {
                return Ok(found);
            }
            if attempt < self.policy.attempts_max {
                tokio::time::sleep(self.policy.backoff(attempt)).await;
            }
        }
        Err(CelcoinError::Exhausted { attempts: self.policy.attempts_max, last })
    }

    fn split_json(split: &[SplitPart]) -> serde_json::Value {
        serde_json::Value::Array(
            split
                .iter()
                .map(|part| json!({"account": part.account, "amount": reais_of(part.amount_centavos)}))
                .collect(),
        )
    }

    /// Creates the charge, or finds the one created before under the same client request id.
    pub async fn create_charge(&self, request: &ChargeRequest) -> Result<Charge, CelcoinError> {
        let debtor = json!({"name": request.debtor_name, "cpf": request.debtor_cpf});
        let split = Self::split_json(&request.split);
        let (path, body) = match (request.method, &request.due_date) {
            (ChargeMethod::Pix, None) => (
                "/pix/v1/collection/immediate",
                json!({
                    "clientRequestId": request.client_request_id, "key": self.pix_key,
                    "amount": reais_of(request.amount_centavos), "calendar": {"expiration": request.expiration_seconds.unwrap_or(PIX_EXPIRATION_SECONDS)},
                    "debtor": debtor, "payerQuestion": request.description, "split": split, "escrow": request.escrow,
                }),
            ),
            (ChargeMethod::Pix, Some(due)) => (
                "/pix/v1/collection/duedate",
                json!({
                    "clientRequestId": request.client_request_id, "key": self.pix_key,
                    "amount": reais_of(request.amount_centavos), "calendar": {"dueDate": due, "validityAfterDueDate": 30},
                    "debtor": debtor, "payerQuestion": request.description, "split": split, "escrow": request.escrow,
                }),
            ),
            (method, due) => (
                "/v5/charge",
                json!({
                    "externalId": request.client_request_id,
                    "paymentMethod": if method == ChargeMethod::Boleto { "boleto" } else { "card" },
                    "amount": reais_of(request.amount_centavos), "dueDate": due, "debtor": debtor,
                    "description": request.description, "split": split, "escrow": request.escrow,
                    "card": request.card_token.as_ref().map(|token| json!({"token": token})),
                }),
            ),
        };
        let id = request.client_request_id.clone();
        let answer = self.write_once(path, &body, || self.find_charge(&id)).await?;
        parse_charge(&answer)
    }

    /// The charge Celcoin holds under our client request id, if any.
    pub async fn find_charge(&self, client_request_id: &str) -> Result<Option<serde_json::Value>, CelcoinError> {
        self.read(&format!("/v5/charge/external/{client_request_id}")).await
    }

    /// The charge made under our client request id, if one was (a charge whose answer was lost).
    pub async fn charge_made(&self, client_request_id: &str) -> Result<Option<Charge>, CelcoinError> {
        self.find_charge(client_request_id).await?.as_ref().map(parse_charge).transpose()
    }

    /// The charge made under our client request id with the money that has left it since, if
    /// one was made.
    pub async fn charge_with_returns(
        &self,
        client_request_id: &str,
    ) -> Result<Option<(Charge, Vec<Return>)>, CelcoinError> {
        let Some(body) = self.find_charge(client_request_id).await? else { return Ok(None) };
        Ok(Some((parse_charge(&body)?, returns_of(&body))))
    }

    /// Asks Celcoin to send `amount` of a paid charge back to the payer (PIX devolução).
    /// `client_code` is ours, unique per refund: asking twice refunds once.
    pub async fn refund(
        &self,
        transaction_id: &str,
        client_code: &str,
        amount_centavos: i64,
        reason: &str,
    ) -> Result<String, CelcoinError> {
        let body = json!({"clientCode": client_code, "amount": reais_of(amount_centavos), "reason": reason});
        let code = client_code.to_owned();
        let answer = self
            .write_once(&format!("/pix/v1/reverse/pi/{transaction_id}"), &body, || async {
                self.read(&format!("/pix/v1/reverse/client-code/{code}")).await
            })
            .await?;
        answer
            .get("transactionId")
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .ok_or_else(|| CelcoinError::Protocol("reversal without transactionId".into()))
    }

    /// Releases the escrowed part of a charge to the provider. Idempotent at Celcoin.
    pub async fn release_escrow(&self, transaction_id: &str) -> Result<(), CelcoinError> {
        let path = format!("/v5/escrow/{transaction_id}/release");
        let id = transaction_id.to_owned();
        self.write_once(&path, &json!({"transactionId": transaction_id}), || async {
            let found = self.read(&format!("/v5/escrow/{id}")).await?;
            Ok(found.filter(|escrow| escrow.get("status").and_then(|v| v.as_str()) == Some("RELEASED")))
        })
        .await?;
        Ok(())
    }

    /// Celcoin's statement: every charge it holds, a page at a time.
    pub async fn statement(&self) -> Result<Vec<StatementItem>, CelcoinError> {
        let mut items = Vec::new();
        let mut page = 1;
        loop {
            let body = self
                .read(&format!("/v5/statement?page={page}&limit=500"))
                .await?
                .ok_or_else(|| CelcoinError::Protocol("no statement".into()))?;
            let batch: Vec<StatementItem> = serde_json::from_value(body.get("items").cloned().unwrap_or_default())
                .map_err(|error| CelcoinError::Protocol(error.to_string()))?;
            items.extend(batch);
            match body.get("nextPage").and_then(|v| v.as_i64()) {
                Some(next) if next > page && page < 10_000 => page = next,
                _ => return Ok(items),
            }
        }
    }
}

fn message_of(body: &serde_json::Value, status: StatusCode) -> String {
    body.get("message").and_then(|v| v.as_str()).map_or_else(|| format!("HTTP {status}"), str::to_owned)
}

fn parse_charge(body: &serde_json::Value) -> Result<Charge, CelcoinError> {
    let text = |pointer: &str| body.pointer(pointer).and_then(|v| v.as_str()).map(str::to_owned);
    let protocol = |what: &str| CelcoinError::Protocol(format!("charge without {what}"));
    let amount = body
        .pointer("/amount/original")
        .or_else(|| body.get("amount"))
        .and_then(centavos_of)
        .ok_or_else(|| protocol("amount"))?;
    let method = match text("/paymentMethod").as_deref() {
        Some("boleto") => ChargeMethod::Boleto,
        Some("card") => ChargeMethod::Card,
        _ => ChargeMethod::Pix,
    };
    Ok(Charge {
        transaction_id: body
            .get("transactionId")
            .and_then(|v| v.as_str().map(str::to_owned).or_else(|| v.as_i64().map(|n| n.to_string())))
            .ok_or_else(|| protocol("transactionId"))?,
        client_request_id: text("/clientRequestId").or_else(|| text("/externalId")).ok_or_else(|| protocol("id"))?,
        method,
        amount_centavos: amount,
        status: text("/status").unwrap_or_default(),
        emv: text("/location/emv").or_else(|| text("/pix/emv")),
        linha_digitavel: text("/boleto/linhaDigitavel"),
        barcode: text("/boleto/barCode"),
        expiration_seconds: body.pointer("/calendar/expiration").and_then(|v| v.as_i64()),
        due_date: text("/calendar/dueDate").or_else(|| text("/dueDate")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_round_trip_through_reais() {
        for centavos in [1, 99, 100, 150_000, 94_560, 123_456_789, 99_999_999_999] {
            assert_eq!(centavos_of(&reais_of(centavos)), Some(centavos));
        }
        assert_eq!(centavos_of(&json!("1500.1")), Some(150_010));
        assert_eq!(centavos_of(&json!(1500)), Some(150_000));
    }

    /// Through a float, 150.005 became 15 001 centavos and 0.1 + 0.2 became 30: neither is an
    /// amount Celcoin writes, and neither is taken.
    #[test]
    fn amounts_that_are_not_centavos_are_refused() {
        for value in [
            json!(150.005),
            json!(0.1 + 0.2),
            json!(-1),
            json!(-0.5),
            json!(1e21),
            json!("12,50"),
            json!(null),
            json!(""),
        ] {
            assert_eq!(centavos_of(&value), None, "{value}");
        }
        assert!(serde_json::from_value::<Reais>(json!(10.001)).is_err());
        assert_eq!(serde_json::to_value(Reais(1_050)).unwrap(), json!(10.5));
    }

    #[test]
    fn notices_parse_and_refuse_garbage() {
        let body =
            br#"{"Id":"n1","TransactionType":"RECEIVEPIX","RequestBody":{"TransactionId":"t1","Amount":1500.5}}"#;
        let notice = parse_notice(body).unwrap();
        assert_eq!(
            (notice.kind, notice.amount_centavos, notice.charge_transaction_id.as_str()),
            (NoticeKind::Paid, 150_050, "t1")
        );
        let refund = br#"{"Id":"n2","TransactionType":"PIX_REVERSAL","RequestBody":{"TransactionId":"r1","OriginalTransactionId":"t1","ClientCode":"c1","Amount":10}}"#;
        let notice = parse_notice(refund).unwrap();
        assert_eq!(
            (notice.kind, notice.reversal_id.as_deref(), notice.client_code.as_deref()),
            (NoticeKind::RefundDone, Some("r1"), Some("c1"))
        );
        assert!(parse_notice(br#"{"Id":"n3","TransactionType":"WHATEVER","RequestBody":{}}"#).is_err());
        assert!(
            parse_notice(
                br#"{"Id":"n3","TransactionType":"RECEIVEPIX","RequestBody":{"TransactionId":"t","Amount":-1}}"#
            )
            .is_err()
        );
        assert!(parse_notice(b"nope").is_err());
    }
}
