//! A tenant's share of the server: each credential (or, without one, each client address) may
//! have at most `per_tenant` requests in flight, waiting for a slot included, so that one busy
//! provider cannot take every slot of `concurrency_max` from the others. Past it, 503
//! `tenant_busy` with Retry-After, before any work is done. In this process: each node counts its
//! own.

use crate::error::ApiError;
use axum::extract::{ConnectInfo, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// Requests in flight per tenant; a tenant with none is not held (the map is as large as the
/// number of tenants with a request open, at most one per open connection).
pub struct TenantShare {
    per_tenant: usize,
    in_flight: Mutex<HashMap<String, usize>>,
}

/// A request counted against its tenant until dropped.
pub struct Entered {
    share: Arc<TenantShare>,
    tenant: String,
}

impl Drop for Entered {
    fn drop(&mut self) {
        let mut in_flight = self.share.in_flight.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = in_flight.get_mut(&self.tenant) {
            *count -= 1;
            if *count == 0 {
                in_flight.remove(&self.tenant);
            }
        }
    }
}

impl TenantShare {
    pub fn new(per_tenant: usize) -> TenantShare {
        TenantShare { per_tenant: per_tenant.max(1), in_flight: Mutex::new(HashMap::new()) }
    }

    /// Counts one more request of `tenant`, unless it has its whole share in flight already.
    pub fn enter(self: &Arc<Self>, tenant: String) -> Option<Entered> {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = in_flight.entry(tenant.clone()).or_insert(0);
        if *count >= self.per_tenant {
            return None;
        }
        *count += 1;
        Some(Entered { share: self.clone(), tenant })
    }

    /// Requests of `tenant` in flight now.
    #[cfg(test)]
    fn in_flight(&self, tenant: &str) -> usize {
        self.in_flight.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get(tenant).copied().unwrap_or(0)
    }
}

/// Whose share a request takes: its bearer credential as sent (well-formed), else its client
/// address.
fn tenant(request: &Request) -> String {
    match crate::auth::bearer(request.headers()) {
        Some(token) => format!("key:{token}"),
        None => {
            let address = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip());
            address.map_or_else(|| "address:unknown".to_owned(), |ip| format!("address:{ip}"))
        }
    }
}

pub async fn share_concurrency(share: Arc<TenantShare>, request: Request, next: Next) -> Response {
    let Some(_entered) = share.enter(tenant(&request)) else {
        metrics::counter!("medpay_tenant_busy_total").increment(1);
        return ApiError::tenant_busy().into_response();
    };
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::TenantShare;

    #[test]
    fn a_tenant_holds_at_most_its_share_and_gets_it_back_as_requests_end() {
        let share = std::sync::Arc::new(TenantShare::new(2));
        let a = || "key:a".to_owned();
        let first = share.enter(a()).expect("one");
        let second = share.enter(a()).expect("two");
        assert!(share.enter(a()).is_none(), "a third is refused");
        assert!(share.enter("key:b".to_owned()).is_some(), "another tenant is not");
        assert_eq!(share.in_flight("key:a"), 2);
        drop(first);
        let third = share.enter(a()).expect("a slot came back");
        drop((second, third));
        assert_eq!(share.in_flight("key:a"), 0);
        assert!(share.in_flight.lock().unwrap().is_empty(), "a tenant with nothing in flight is not held");
    }
}
