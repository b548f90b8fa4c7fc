//! Cross-origin HTTP for a party (`cors` in its options) and the
//! WebSocket `Origin` allow-list (`ws_origins`), answered by the reactor
//! without reaching the room: a preflight (`OPTIONS` with
//! `Access-Control-Request-Method`) is answered here, and the response to
//! any other request from an allowed origin carries the
//! `Access-Control-Allow-*` headers. Only the browser enforces CORS: a
//! request from an origin not allowed still reaches the room (as it would
//! from `curl`); its response just lacks the headers, so a page cannot read
//! it.

use crate::config::CorsRules;
use crate::http::{RequestHead, Response};

/// The methods allowed when the rules name none.
const DEFAULT_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE";
/// How long a browser may cache a preflight's answer when the rules do not
/// say (Chromium caps it at 7,200 s).
const DEFAULT_MAX_AGE: u64 = 600;

/// The headers the response to `request` carries under `rules`, if it came
/// from an allowed origin: `Access-Control-Allow-Origin` (`*`, or the
/// origin itself: always with credentials, which a browser refuses with
/// `*`), and `Vary: origin` when the answer depends on it.
pub(crate) fn response_headers(rules: &CorsRules, request: &RequestHead) -> Vec<(String, String)> {
    let Some(origin) = request.header_str("origin") else { return Vec::new() };
    let any = rules.allows_any_origin();
    if !any && !rules.origins.iter().any(|o| o.eq_ignore_ascii_case(origin)) {
        return Vec::new();
    }
    let echo = !any || rules.credentials;
    let mut headers = vec![("access-control-allow-origin".to_owned(), if echo { origin } else { "*" }.to_owned())];
    if rules.credentials {
        headers.push(("access-control-allow-credentials".to_owned(), "true".to_owned()));
    }
    if echo {
        headers.push(("vary".to_owned(), "origin".to_owned()));
    }
    headers
}

/// The answer to `request` if it is a preflight (`OPTIONS` with
/// `Access-Control-Request-Method`): 204 with what is allowed, or 403 for
/// an origin that is not.
pub(crate) fn preflight(rules: &CorsRules, request: &RequestHead) -> Option<Response> {
    if request.method != "OPTIONS" || request.header("access-control-request-method").is_none() {
        return None;
    }
    let mut headers = response_headers(rules, request);
    if headers.is_empty() {
        let origin = request.header_str("origin").unwrap_or("(none)");
        return Some(Response::text(403, format!("origin {origin} is not allowed")).with_header("vary", "origin"));
    }
    let methods = if rules.methods.is_empty() { DEFAULT_METHODS.to_owned() } else { rules.methods.join(", ") };
    headers.push(("access-control-allow-methods".to_owned(), methods));
    let asked = request.header_str("access-control-request-headers").unwrap_or("");
    let allowed = if rules.headers.is_empty() { asked.to_owned() } else { rules.headers.join(", ") };
    if !allowed.is_empty() {
        headers.push(("access-control-allow-headers".to_owned(), allowed));
    }
    headers.push(("access-control-max-age".to_owned(), rules.max_age.unwrap_or(DEFAULT_MAX_AGE).to_string()));
    let mut response = Response::new(204);
    response.headers = headers;
    Some(response)
}

/// Whether a WebSocket upgrade with this `Origin` is let in by a party's
/// `ws_origins` (none: every origin). A request without `Origin` (not from
/// a browser, which always sends one) is let in: the header only stops
/// other sites' pages, and any other client can send what it likes.
pub(crate) fn ws_origin_allowed(allowed: Option<&[String]>, request: &RequestHead) -> Result<(), Response> {
    let (Some(allowed), Some(origin)) = (allowed, request.header_str("origin")) else { return Ok(()) };
    if allowed.iter().any(|o| o == "*" || o.eq_ignore_ascii_case(origin)) {
        return Ok(());
    }
    Err(Response::text(403, format!("origin {origin} may not open a WebSocket to this party")))
}
