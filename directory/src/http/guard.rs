//! Guards of the public read API: optional bearer authentication (whether a label
//! exists is itself private) and a per-client-address rate limit, both configurable
//! (`docs/api.md`). The operator routes have their own token; `/metrics` and
//! `/healthz` are for operators and stay open.

use super::{ApiError, AppState};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::{DefaultKeyedRateLimiter, Quota};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;

/// How reads are guarded.
#[derive(Debug, Clone, Default)]
pub struct ReadGuard {
    /// blake3 of the read token, when reads need one.
    pub token_hash: Option<blake3::Hash>,
    /// Requests per second per client address, with a burst, when limited.
    pub limiter: Option<Arc<DefaultKeyedRateLimiter<IpAddr>>>,
}

impl ReadGuard {
    /// A guard from the settings (`rate` 0 or `None`: unlimited).
    pub fn new(token: Option<&str>, rate_per_sec: Option<u32>, burst: Option<u32>) -> ReadGuard {
        let limiter = rate_per_sec.and_then(NonZeroU32::new).map(|rate| {
            let burst = burst.and_then(NonZeroU32::new).unwrap_or(rate);
            Arc::new(DefaultKeyedRateLimiter::keyed(
                Quota::per_second(rate).allow_burst(burst),
            ))
        });
        ReadGuard {
            token_hash: token.map(|t| blake3::hash(t.trim().as_bytes())),
            limiter,
        }
    }

    /// Forgets addresses not seen lately (call now and then: the map grows with clients).
    pub fn prune(&self) {
        if let Some(l) = &self.limiter {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

/// The client's address as the read routes see it (`None` without one: tests
/// driving the router directly). Put in the request by [`guard_reads`].
#[derive(Debug, Clone, Copy)]
pub(super) struct ClientIp(pub Option<IpAddr>);

/// The middleware on every read route: the read token, the rate limit, and the
/// client's address for the routes ([`ClientIp`]).
pub(super) async fn guard_reads(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let client = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    request.extensions_mut().insert(ClientIp(client));
    let guard = &state.read_guard;
    if let Some(expected) = guard.token_hash {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| blake3::hash(t.trim().as_bytes()));
        // blake3::Hash compares in constant time.
        if given != Some(expected) {
            return ApiError::Unauthorized("reads need the read token: Authorization: Bearer <token>").into_response();
        }
    }
    if let Some(limiter) = &guard.limiter {
        // Behind no proxy the peer address is the client; without one (tests) all share a key.
        let ip = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
        if let Err(not_until) = limiter.check_key(&ip) {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default()));
            let secs = wait.as_secs().max(1);
            state.metrics.http_rate_limited.inc();
            let mut response = ApiError::Client(
                StatusCode::TOO_MANY_REQUESTS,
                format!("rate limit of the read API exceeded; retry in {secs} s"),
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return response;
        }
    }
    next.run(request).await
}
