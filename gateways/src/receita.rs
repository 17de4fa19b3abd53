//! Receita Federal's cadastral status of a CPF or CNPJ ("situação cadastral"), in the shapes of
//! Serpro's Consulta CPF and Consulta CNPJ APIs (OAuth2 client credentials; `situacao.codigo` for
//! a CPF, `situacaoCadastral.codigo` for a CNPJ), with a sandbox server of the same shapes.

use crate::resilience::{Breaker, Policy, TokenCache};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post, put};
use medpay_models::{Cnpj, Cpf};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a status is trusted before it is asked again.
pub const STATUS_CACHE_TTL_MS: u64 = 6 * 60 * 60 * 1_000;
/// Statuses kept in the cache.
pub const STATUS_CACHE_MAX: usize = 100_000;

/// A status enum with Serpro's code and Receita's words for each variant, from one table.
macro_rules! situations {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => ($code:literal, $words:literal)),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
        pub enum $name {
            $($variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// Serpro's code and Receita's words.
            pub fn code(self) -> (&'static str, &'static str) {
                match self {
                    $($name::$variant => ($code, $words)),+
                }
            }

            pub fn from_code(code: &str) -> Option<$name> {
                Self::ALL.iter().copied().find(|status| status.code().0 == code)
            }
        }
    };
}

situations!(
    /// A CPF's situação cadastral.
    CpfStatus {
        Regular => ("0", "Regular"),
        Suspended => ("2", "Suspensa"),
        Deceased => ("3", "Titular Falecido"),
        PendingRegularization => ("4", "Pendente de Regularização"),
        CancelledMultiplicity => ("5", "Cancelada por Multiplicidade"),
        Null => ("8", "Nula"),
        CancelledOfficially => ("9", "Cancelada de Ofício"),
    }
);

situations!(
    /// A CNPJ's situação cadastral.
    CnpjStatus {
        Null => ("1", "Nula"),
        Active => ("2", "Ativa"),
        Suspended => ("3", "Suspensa"),
        Unfit => ("4", "Inapta"),
        Closed => ("8", "Baixada"),
    }
);

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("Receita is not answering (circuit open); retry later")]
    CircuitOpen,
    #[error("Receita failed after {attempts} attempts: {last}")]
    Exhausted { attempts: u32, last: String },
    #[error("Receita answered something unexpected: {0}")]
    Protocol(String),
}

/// A Receita client: token cached and refreshed before it expires, statuses cached, every call
/// through the time-out, retry and circuit-breaker policy.
pub struct ReceitaClient {
    base: String,
    client_id: String,
    client_secret: String,
    http: reqwest::Client,
    policy: Policy,
    breaker: Breaker,
    token: TokenCache,
    cache: Mutex<HashMap<String, (String, Instant)>>,
}

impl ReceitaClient {
    pub fn new(
        base: &str,
        client_id: &str,
        client_secret: &str,
        policy: Policy,
    ) -> Result<ReceitaClient, GatewayError> {
        let http = crate::resilience::http_client(&policy).map_err(GatewayError::Protocol)?;
        Ok(ReceitaClient {
            base: base.trim_end_matches('/').to_owned(),
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            http,
            policy,
            breaker: Breaker::default(),
            token: TokenCache::default(),
            cache: Mutex::new(HashMap::new()),
        })
    }

    fn cached(&self, key: &str) -> Option<String> {
        let cache = self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        cache
            .get(key)
            .filter(|(_, at)| at.elapsed() < Duration::from_millis(STATUS_CACHE_TTL_MS))
            .map(|(code, _)| code.clone())
    }

    fn remember(&self, key: String, code: String) {
        let mut cache = self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if cache.len() >= STATUS_CACHE_MAX {
            cache.retain(|_, (_, at)| at.elapsed() < Duration::from_millis(STATUS_CACHE_TTL_MS));
            if cache.len() >= STATUS_CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(key, (code, Instant::now()));
    }

    async fn access_token(&self, refresh: bool) -> Result<String, String> {
        if let Some(token) = self.token.fresh().filter(|_| !refresh) {
            return Ok(token);
        }
        let response = self
            .http
            .post(format!("{}/token", self.base))
            .basic_auth(&self.client_id, Some(&self.client_secret))
            .form(&[("grant_type", "client_credentials")])
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

    /// GET `path` with the policy: retried on time-outs, connection errors and 5xx; a 401 gets a
    /// fresh token once.
    /// `shown`: the path as errors and logs may name it (the document masked: the path carries
    /// the CPF or CNPJ in clear).
    async fn get(&self, path: &str, shown: &str) -> Result<serde_json::Value, GatewayError> {
        let mut last = String::new();
        let mut refresh = false;
        for attempt in 1..=self.policy.attempts_max {
            if !self.breaker.allow() {
                return Err(GatewayError::CircuitOpen);
            }
            let outcome = async {
                let token = self.access_token(refresh).await?;
                let response = self
                    .http
                    .get(format!("{}{path}", self.base))
                    .bearer_auth(token)
                    .send()
                    .await
                    // reqwest's message names the URL, and so the document.
                    .map_err(|error| error.without_url().to_string())?;
                let status = response.status();
                let body: serde_json::Value = response.json().await.unwrap_or(serde_json::Value::Null);
                Ok::<_, String>((status, body))
            }
            .await;
            match outcome {
                Ok((status, body)) if status.is_success() => {
                    self.breaker.succeeded();
                    return Ok(body);
                }
                Ok((StatusCode::UNAUTHORIZED, _)) if !refresh => {
                    refresh = true;
                    last = "HTTP 401".to_owned();
                    continue;
                }
                Ok((status, _)) if status.is_client_error() => {
                    self.breaker.succeeded();
                    return Err(GatewayError::Protocol(format!("HTTP {status} for {shown}")));
                }
                Ok((status, _)) => last = format!("HTTP {status}"),
                Err(error) => last = error,
            }
            self.breaker.failed(&self.policy);
            if attempt < self.policy.attempts_max {
                tokio::time::sleep(self.policy.backoff(attempt)).await;
            }
        }
        Err(GatewayError::Exhausted { attempts: self.policy.attempts_max, last })
    }

    /// The situation code at `pointer` (a JSON pointer) of the document at `path`, cached by `key`.
    async fn situation(&self, key: String, path: String, shown: String, pointer: &str) -> Result<String, GatewayError> {
        if let Some(code) = self.cached(&key) {
            return Ok(code);
        }
        let body = self.get(&path, &shown).await?;
        let code = body
            .pointer(pointer)
            .and_then(|value| value.as_str())
            .ok_or_else(|| GatewayError::Protocol(format!("no {pointer}")))?
            .to_owned();
        self.remember(key, code.clone());
        Ok(code)
    }

    pub async fn cpf_status(&self, cpf: &Cpf) -> Result<CpfStatus, GatewayError> {
        let path = format!("/consulta-cpf-df/v2/cpf/{}", cpf.as_str());
        let shown = format!("/consulta-cpf-df/v2/cpf/{}", cpf.masked());
        let code = self.situation(format!("cpf:{}", cpf.as_str()), path, shown, "/situacao/codigo").await?;
        CpfStatus::from_code(&code).ok_or_else(|| GatewayError::Protocol(format!("unknown CPF situation {code:?}")))
    }

    pub async fn cnpj_status(&self, cnpj: &Cnpj) -> Result<CnpjStatus, GatewayError> {
        let path = format!("/consulta-cnpj-df/v2/basica/{}", cnpj.as_str());
        let shown = format!("/consulta-cnpj-df/v2/basica/{}", cnpj.masked());
        let code = self.situation(format!("cnpj:{}", cnpj.as_str()), path, shown, "/situacaoCadastral/codigo").await?;
        CnpjStatus::from_code(&code).ok_or_else(|| GatewayError::Protocol(format!("unknown CNPJ situation {code:?}")))
    }
}

/// The sandbox's state: statuses set by tests and demos (everyone else is regular / active),
/// and faults to inject.
#[derive(Default)]
struct Sandbox {
    cpf: Mutex<HashMap<String, String>>,
    cnpj: Mutex<HashMap<String, String>>,
    /// Answer the next N calls with this status.
    fail_next: Mutex<(u32, u16)>,
    calls: Mutex<u64>,
}

#[derive(Deserialize)]
struct SetStatus {
    codigo: String,
}

#[derive(Deserialize)]
struct Faults {
    fail_next: u32,
    status: u16,
}

type Shared = Arc<Sandbox>;
const SANDBOX_TOKEN: &str = "sandbox-access-token";

fn authorised(headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|value| value.to_str().ok()) == Some(&format!("Bearer {SANDBOX_TOKEN}"))
}

fn injected_fault(sandbox: &Sandbox) -> Option<StatusCode> {
    *sandbox.calls.lock().unwrap_or_else(|p| p.into_inner()) += 1;
    let mut faults = sandbox.fail_next.lock().unwrap_or_else(|p| p.into_inner());
    if faults.0 > 0 {
        faults.0 -= 1;
        return StatusCode::from_u16(faults.1).ok();
    }
    None
}

async fn token() -> Json<serde_json::Value> {
    Json(
        json!({"access_token": SANDBOX_TOKEN, "token_type": "Bearer", "expires_in": 3600, "scope": "am_application_scope default"}),
    )
}

async fn cpf(
    State(sandbox): State<Shared>,
    headers: HeaderMap,
    Path(ni): Path<String>,
) -> (StatusCode, Json<serde_json::Value>) {
    if !authorised(&headers) {
        return (StatusCode::UNAUTHORIZED, Json(json!({"mensagem": "token inválido"})));
    }
    if let Some(fault) = injected_fault(&sandbox) {
        return (fault, Json(json!({"mensagem": "falha simulada"})));
    }
    if ni.parse::<Cpf>().is_err() {
        return (StatusCode::BAD_REQUEST, Json(json!({"mensagem": "CPF inválido"})));
    }
    let code =
        sandbox.cpf.lock().unwrap_or_else(|p| p.into_inner()).get(&ni).cloned().unwrap_or_else(|| "0".to_owned());
    let description = CpfStatus::from_code(&code).map_or("Desconhecida", |status| status.code().1);
    (
        StatusCode::OK,
        Json(
            json!({"ni": ni, "nome": "CONTRIBUINTE SANDBOX", "situacao": {"codigo": code, "descricao": description}, "nascimento": "01011990"}),
        ),
    )
}

async fn cnpj(
    State(sandbox): State<Shared>,
    headers: HeaderMap,
    Path(ni): Path<String>,
) -> (StatusCode, Json<serde_json::Value>) {
    if !authorised(&headers) {
        return (StatusCode::UNAUTHORIZED, Json(json!({"mensagem": "token inválido"})));
    }
    if let Some(fault) = injected_fault(&sandbox) {
        return (fault, Json(json!({"mensagem": "falha simulada"})));
    }
    let code =
        sandbox.cnpj.lock().unwrap_or_else(|p| p.into_inner()).get(&ni).cloned().unwrap_or_else(|| "2".to_owned());
    (
        StatusCode::OK,
        Json(
            json!({"ni": ni, "nomeEmpresarial": "EMPRESA SANDBOX LTDA", "situacaoCadastral": {"codigo": code, "data": "2020-01-01", "motivo": ""}}),
        ),
    )
}

async fn set_cpf(State(sandbox): State<Shared>, Path(ni): Path<String>, Json(body): Json<SetStatus>) -> StatusCode {
    sandbox.cpf.lock().unwrap_or_else(|p| p.into_inner()).insert(ni, body.codigo);
    StatusCode::NO_CONTENT
}

async fn set_cnpj(State(sandbox): State<Shared>, Path(ni): Path<String>, Json(body): Json<SetStatus>) -> StatusCode {
    sandbox.cnpj.lock().unwrap_or_else(|p| p.into_inner()).insert(ni, body.codigo);
    StatusCode::NO_CONTENT
}

async fn set_faults(State(sandbox): State<Shared>, Json(body): Json<Faults>) -> StatusCode {
    *sandbox.fail_next.lock().unwrap_or_else(|p| p.into_inner()) = (body.fail_next, body.status);
    StatusCode::NO_CONTENT
}

async fn calls(State(sandbox): State<Shared>) -> Json<serde_json::Value> {
    Json(json!({"calls": *sandbox.calls.lock().unwrap_or_else(|p| p.into_inner())}))
}

/// The sandbox's routes. Control endpoints (`PUT /sandbox/…`) set statuses and faults.
pub fn sandbox_router() -> axum::Router {
    axum::Router::new()
        .route("/token", post(token))
        .route("/consulta-cpf-df/v2/cpf/{ni}", get(cpf))
        .route("/consulta-cnpj-df/v2/basica/{ni}", get(cnpj))
        .route("/sandbox/cpf/{ni}", put(set_cpf))
        .route("/sandbox/cnpj/{ni}", put(set_cnpj))
        .route("/sandbox/faults", put(set_faults))
        .route("/sandbox/calls", get(calls))
        .with_state(Arc::new(Sandbox::default()))
}

/// Serves the sandbox on `bind` (port 0: any free port) in the background; returns its address.
pub async fn start_sandbox(bind: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(bind).await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, sandbox_router()).await {
            tracing::error!(%error, "Receita sandbox stopped");
        }
    });
    Ok(address)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn setup(policy: Policy) -> (ReceitaClient, String, reqwest::Client) {
        let address = start_sandbox("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let base = format!("http://{address}");
        let client = ReceitaClient::new(&base, "id", "secret", policy).unwrap();
        (client, base, reqwest::Client::new())
    }

    #[tokio::test]
    async fn statuses_come_back_and_are_cached() {
        let (client, base, control) = setup(Policy::default()).await;
        let cpf: Cpf = "529.982.247-25".parse().unwrap();
        assert_eq!(client.cpf_status(&cpf).await.unwrap(), CpfStatus::Regular);
        let other: Cpf = "111.444.777-35".parse().unwrap();
        control.put(format!("{base}/sandbox/cpf/11144477735")).json(&json!({"codigo": "2"})).send().await.unwrap();
        assert_eq!(client.cpf_status(&other).await.unwrap(), CpfStatus::Suspended);
        let cnpj: Cnpj = "11.222.333/0001-81".parse().unwrap();
        control.put(format!("{base}/sandbox/cnpj/11222333000181")).json(&json!({"codigo": "4"})).send().await.unwrap();
        assert_eq!(client.cnpj_status(&cnpj).await.unwrap(), CnpjStatus::Unfit);
        let calls: serde_json::Value =
            control.get(format!("{base}/sandbox/calls")).send().await.unwrap().json().await.unwrap();
        assert_eq!(client.cpf_status(&cpf).await.unwrap(), CpfStatus::Regular);
        let again: serde_json::Value =
            control.get(format!("{base}/sandbox/calls")).send().await.unwrap().json().await.unwrap();
        assert_eq!(calls, again, "the second question was answered from the cache");
    }

    #[tokio::test]
    async fn server_errors_are_retried_and_a_failing_system_opens_the_circuit() {
        let policy = Policy {
            attempts_max: 3,
            backoff_base_ms: 1,
            backoff_max_ms: 5,
            breaker_failures: 4,
            breaker_open_ms: 60_000,
            ..Policy::default()
        };
        let (client, base, control) = setup(policy).await;
        control
            .put(format!("{base}/sandbox/faults"))
            .json(&json!({"fail_next": 2, "status": 503}))
            .send()
            .await
            .unwrap();
        let cpf: Cpf = "529.982.247-25".parse().unwrap();
        assert_eq!(client.cpf_status(&cpf).await.unwrap(), CpfStatus::Regular, "two 503s, then an answer");
        control
            .put(format!("{base}/sandbox/faults"))
            .json(&json!({"fail_next": 100, "status": 500}))
            .send()
            .await
            .unwrap();
        let other: Cpf = "111.444.777-35".parse().unwrap();
        assert!(matches!(client.cpf_status(&other).await, Err(GatewayError::Exhausted { attempts: 3, .. })));
        // Three failures so far (the success before them reset the count); one more opens it.
        let third: Cpf = "390.533.447-05".parse().unwrap();
        // The fourth failure opens the circuit; the call's next attempt is refused without a request.
        assert!(matches!(client.cpf_status(&third).await, Err(GatewayError::CircuitOpen)));
        let before: serde_json::Value =
            control.get(format!("{base}/sandbox/calls")).send().await.unwrap().json().await.unwrap();
        assert!(matches!(client.cpf_status(&third).await, Err(GatewayError::CircuitOpen)));
        let after: serde_json::Value =
            control.get(format!("{base}/sandbox/calls")).send().await.unwrap().json().await.unwrap();
        assert_eq!(before, after, "an open circuit sends nothing");
    }

    #[tokio::test]
    async fn errors_name_the_document_masked() {
        let policy = Policy { attempts_max: 2, backoff_base_ms: 1, backoff_max_ms: 2, ..Policy::default() };
        let (client, base, control) = setup(policy.clone()).await;
        control
            .put(format!("{base}/sandbox/faults"))
            .json(&json!({"fail_next": 1, "status": 404}))
            .send()
            .await
            .unwrap();
        let cpf: Cpf = "111.444.777-35".parse().unwrap();
        let refused = client.cpf_status(&cpf).await.unwrap_err().to_string();
        assert!(!refused.contains("11144477735") && !refused.contains("111.444.777-35"), "{refused}");
        assert!(refused.contains(&cpf.masked()), "{refused}");
        // Nothing listening: reqwest's own message would name the URL, and so the CPF.
        let nobody = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dead = format!("http://{}", nobody.local_addr().unwrap());
        drop(nobody);
        let client = ReceitaClient::new(&dead, "id", "secret", policy).unwrap();
        let unreachable = client.cpf_status(&cpf).await.unwrap_err().to_string();
        assert!(!unreachable.contains("11144477735"), "{unreachable}");
    }
}
