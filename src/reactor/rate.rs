//! Rate limits, applied before any room sees the traffic: each WebSocket's
//! messages and bytes (two buckets per socket, in a table beside the
//! records), and each client IP's upgrades and requests (the cores' shared
//! [`IpLimiter`]). Past a limit a message is dropped or its connection
//! closed with 1008, an upgrade or request gets 429 with `Retry-After`.

use super::State;
use crate::client_ip::client_ip;
use crate::config::{RateLimitAction, RateLimits};
use crate::http::{RequestHead, Response};
use crate::rate_limit::{retry_after_secs, IpAction, IpAdmit, Rate};
use crate::ws;

/// The reason a connection over its rate limit is closed with (1008).
pub(super) const RATE_LIMITED: &str = "rate limit";

/// The per-connection limits, from `[rate_limits]`.
pub(crate) struct ConnRates {
    messages: Option<Rate>,
    bytes: Option<Rate>,
    action: RateLimitAction,
}

impl ConnRates {
    pub(crate) fn of(config: &RateLimits) -> ConnRates {
        ConnRates {
            messages: Rate::per_sec(config.messages_per_sec),
            bytes: Rate::per_sec(config.bytes_per_sec),
            action: config.action,
        }
    }

    fn is_off(&self) -> bool {
        self.messages.is_none() && self.bytes.is_none()
    }
}

impl State {
    fn now_ns(&self) -> u64 {
        self.now_ms.saturating_mul(1_000_000)
    }

    /// A new socket in `slot` starts with full buckets.
    pub(super) fn reset_rates(&mut self, slot: u32) {
        if self.shared.conn_rates.is_off() {
            return;
        }
        let slot = slot as usize;
        if self.conn_rates.len() <= slot {
            self.conn_rates.resize(slot + 1, [0; 2]);
        }
        self.conn_rates[slot] = [0; 2];
    }

    /// Whether a message of `bytes` from the open socket `slot` is within
    /// its limits. If not, it has been dealt with: dropped, or the socket
    /// is closing with 1008.
    #[inline]
    pub(super) fn within_rate(&mut self, slot: u32, bytes: usize) -> bool {
        let rates = &self.shared.conn_rates;
        if rates.is_off() {
            return true;
        }
        let now_ns = self.now_ns();
        let tats = &mut self.conn_rates[slot as usize];
        let spend = |rate: Option<Rate>, tat: u64, cost: u64| rate.map_or(Ok(tat), |r| r.after(tat, now_ns, cost));
        // Both buckets are checked before either is spent: a message refused
        // for its bytes does not cost a message, nor the other way round.
        if let (Ok(messages), Ok(bytes)) =
            (spend(rates.messages, tats[0], 1), spend(rates.bytes, tats[1], bytes as u64))
        {
            *tats = [messages, bytes];
            return true;
        }
        self.counters.rate_limited_messages += 1;
        if rates.action == RateLimitAction::Close {
            self.counters.rate_limited_closes += 1;
            self.enqueue(slot, ws::close_frame(Some(1008), RATE_LIMITED));
            self.start_closing(slot, 1008);
        }
        false
    }

    /// Whether the request whose head is `head` is within its client IP's
    /// limit for `action`. If not, it has been answered with 429 and the
    /// socket is closing.
    pub(super) fn ip_admitted(&mut self, slot: u32, head: &RequestHead, action: IpAction) -> bool {
        let Some(limiter) = &self.shared.ip_limiter else { return true };
        let Ok(peer) = socket2::SockRef::from(&self.conns[slot as usize].fd).peer_addr() else {
            // The peer is already gone; the socket's close will follow.
            return true;
        };
        let Some(peer) = peer.as_socket() else { return true };
        let ip = client_ip(peer.ip(), head, &self.shared.trusted_proxies);
        match limiter.admit(ip, action, self.now_ns()) {
            IpAdmit::Yes => true,
            IpAdmit::Untracked => {
                self.counters.rate_untracked_ips += 1;
                true
            }
            IpAdmit::No(wait_ns) => {
                match action {
                    IpAction::Connect => self.counters.rate_limited_connects += 1,
                    IpAction::Request => self.counters.rate_limited_requests += 1,
                }
                let response = Response::text(429, "Too many requests from your address")
                    .with_header("retry-after", retry_after_secs(wait_ns).to_string());
                self.reject(slot, response);
                false
            }
        }
    }
}
