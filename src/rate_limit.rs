//! Token buckets, kept as GCRA's "theoretical arrival time": one `u64` per
//! bucket, no timer, no refill loop. A bucket holds one second of its rate:
//! a client may spend a second's worth at once, then the rate.
//!
//! Two users: each WebSocket connection's messages and bytes (a pair of
//! times in a table beside the core's connection records, so the fan-out,
//! which walks every record, does not carry them), and each client IP's new
//! connections and HTTP requests, in a table shared by the cores (one
//! client's connections land on any core), sharded and bounded.
//!
//! Time is passed in (nanoseconds since an epoch the caller keeps): this
//! module reads no clock.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::Mutex;

const SECOND_NS: u64 = 1_000_000_000;

/// A rate: `per_sec` units a second, a second's worth at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    per_sec: u64,
}

impl Rate {
    /// `None` for 0, which means no limit.
    pub fn per_sec(per_sec: u64) -> Option<Rate> {
        (per_sec > 0).then_some(Rate { per_sec })
    }

    /// Spends `cost` units from the bucket whose arrival time is `tat`, or
    /// says how long until they would fit (the bucket is left as it was).
    /// A cost larger than a second's worth never fits; the configuration
    /// refuses limits that would make that happen to a legal message.
    #[inline]
    pub fn admit(self, tat: &mut u64, now_ns: u64, cost: u64) -> Result<(), u64> {
        *tat = self.after(*tat, now_ns, cost)?;
        Ok(())
    }

    /// The bucket's arrival time once `cost` is spent, or the wait until it
    /// could be: [`Rate::admit`] without the change, so two buckets can be
    /// checked before either is spent.
    #[inline]
    pub fn after(self, tat: u64, now_ns: u64, cost: u64) -> Result<u64, u64> {
        // 2^64 ns is 584 years; a cost of 2^34 units at 1/s would overflow
        // the product, so it saturates (and does not fit).
        let cost_ns = cost.saturating_mul(SECOND_NS) / self.per_sec;
        let next = tat.max(now_ns).saturating_add(cost_ns);
        let ahead = next - now_ns;
        if ahead <= SECOND_NS {
            Ok(next)
        } else {
            Err(ahead - SECOND_NS)
        }
    }
}

/// What a client IP does that is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpAction {
    /// A WebSocket upgrade request.
    Connect = 0,
    /// Any other HTTP request.
    Request = 1,
}

/// The answer of [`IpLimiter::admit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpAdmit {
    Yes,
    /// Let through untracked: the table is full of addresses active within
    /// the last second (a flood from more addresses than it holds, which a
    /// per-address limit cannot stop anyway). Counted, so it shows.
    Untracked,
    /// Over the limit: retry after this many nanoseconds.
    No(u64),
}

/// Per-IP buckets for every core. Each shard is a small map behind its own
/// lock, held for one lookup; cores touch it once per HTTP request or
/// upgrade, never per message.
pub struct IpLimiter {
    rates: [Option<Rate>; 2],
    hasher: RandomState,
    shards: Box<[Mutex<Shard>]>,
    shard_capacity: usize,
}

#[derive(Default)]
struct Shard {
    /// The arrival time of each action's bucket; 0 is a full bucket.
    tats: HashMap<IpAddr, [u64; 2]>,
    /// A full shard whose sweep freed nothing is not swept again before
    /// this, so a flood of new addresses costs a lookup each, not a sweep.
    next_sweep_ns: u64,
}

const SHARDS: usize = 16;

impl IpLimiter {
    /// `None` when neither rate is set. `max_ips` bounds the addresses
    /// tracked at once (over all shards).
    pub fn new(connections: Option<Rate>, requests: Option<Rate>, max_ips: usize) -> Option<IpLimiter> {
        if connections.is_none() && requests.is_none() {
            return None;
        }
        Some(IpLimiter {
            rates: [connections, requests],
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            shard_capacity: max_ips.div_ceil(SHARDS).max(1),
        })
    }

    pub fn admit(&self, ip: IpAddr, action: IpAction, now_ns: u64) -> IpAdmit {
        let Some(rate) = self.rates[action as usize] else { return IpAdmit::Yes };
        let shard = &self.shards[self.hasher.hash_one(ip) as usize % SHARDS];
        // A panic while the lock is held leaves only bucket times behind,
        // which are valid whatever they are: the poison is ignored.
        let mut shard = shard.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !shard.tats.contains_key(&ip) && shard.tats.len() >= self.shard_capacity {
            if now_ns < shard.next_sweep_ns {
                return IpAdmit::Untracked;
            }
            // An address whose buckets have refilled is as good as absent.
            shard.tats.retain(|_, tats| tats.iter().any(|&tat| tat > now_ns));
            if shard.tats.len() >= self.shard_capacity {
                shard.next_sweep_ns = now_ns + SECOND_NS;
                return IpAdmit::Untracked;
            }
        }
        let tats = shard.tats.entry(ip).or_default();
        match rate.admit(&mut tats[action as usize], now_ns, 1) {
            Ok(()) => IpAdmit::Yes,
            Err(wait_ns) => IpAdmit::No(wait_ns),
        }
    }
}

/// Whole seconds to put in `Retry-After` for a wait of `wait_ns`: rounded
/// up, at least 1.
pub fn retry_after_secs(wait_ns: u64) -> u64 {
    wait_ns.div_ceil(SECOND_NS).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn a_bucket_gives_a_seconds_worth_at_once_then_the_rate() {
        let rate = Rate::per_sec(10).unwrap();
        let mut tat = 0;
        let now = 5 * SECOND_NS;
        for _ in 0..10 {
            rate.admit(&mut tat, now, 1).unwrap();
        }
        let wait = rate.admit(&mut tat, now, 1).unwrap_err();
        assert_eq!(wait, 100 * MS, "the next unit fits a tenth of a second later");
        assert_eq!(tat, now + SECOND_NS, "a refused unit is not spent");
        rate.admit(&mut tat, now + 100 * MS, 1).unwrap();
        assert!(rate.admit(&mut tat, now + 100 * MS, 1).is_err());
        // Idle for long: full again, no more than full.
        let later = now + 60 * SECOND_NS;
        for _ in 0..10 {
            rate.admit(&mut tat, later, 1).unwrap();
        }
        assert!(rate.admit(&mut tat, later, 1).is_err());
    }

    #[test]
    fn costs_are_units_of_the_rate() {
        let rate = Rate::per_sec(1000).unwrap();
        let mut tat = 0;
        rate.admit(&mut tat, 0, 600).unwrap();
        rate.admit(&mut tat, 0, 400).unwrap();
        assert_eq!(rate.admit(&mut tat, 0, 1), Err(MS));
        assert!(rate.admit(&mut tat, 0, 1001).is_err(), "more than a second's worth never fits");
        assert!(Rate::per_sec(1).unwrap().admit(&mut 0, 0, u64::MAX).is_err(), "no overflow");
        assert_eq!(Rate::per_sec(0), None, "0 is no limit");
    }

    #[test]
    fn over_a_long_run_the_rate_holds() {
        let rate = Rate::per_sec(50).unwrap();
        let mut tat = 0;
        let mut admitted = 0;
        // A client trying every millisecond for 10 s.
        for ms in 0..10_000 {
            admitted += u64::from(rate.admit(&mut tat, ms * MS, 1).is_ok());
        }
        assert!((500..=550).contains(&admitted), "50/s for 10 s plus one burst: {admitted}");
    }

    #[test]
    fn ip_buckets_are_per_address_and_per_action() {
        let limiter = IpLimiter::new(Rate::per_sec(2), Rate::per_sec(1), 1000).unwrap();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(limiter.admit(a, IpAction::Connect, 0), IpAdmit::Yes);
        assert_eq!(limiter.admit(a, IpAction::Connect, 0), IpAdmit::Yes);
        assert_eq!(limiter.admit(a, IpAction::Connect, 0), IpAdmit::No(500 * MS));
        assert_eq!(limiter.admit(a, IpAction::Request, 0), IpAdmit::Yes, "requests have their own bucket");
        assert_eq!(limiter.admit(a, IpAction::Request, 0), IpAdmit::No(SECOND_NS));
        assert_eq!(limiter.admit(b, IpAction::Connect, 0), IpAdmit::Yes, "another address is not limited");
        assert_eq!(limiter.admit(a, IpAction::Connect, 500 * MS), IpAdmit::Yes);
        assert!(IpLimiter::new(None, None, 10).is_none());
        let only_connects = IpLimiter::new(Rate::per_sec(1), None, 10).unwrap();
        for _ in 0..100 {
            assert_eq!(only_connects.admit(a, IpAction::Request, 0), IpAdmit::Yes);
        }
    }

    #[test]
    fn the_table_is_bounded_and_forgets_addresses_that_refilled() {
        let limiter = IpLimiter::new(Rate::per_sec(1), None, SHARDS).unwrap(); // one per shard
        let ips: Vec<IpAddr> = (0..=255u8).map(|i| IpAddr::from([10, 0, 0, i])).collect();
        let results: Vec<IpAdmit> = ips.iter().map(|&ip| limiter.admit(ip, IpAction::Connect, 0)).collect();
        assert!(results.contains(&IpAdmit::Untracked), "256 addresses do not fit 16 entries");
        let tracked: usize = limiter.shards.iter().map(|s| s.lock().unwrap().tats.len()).sum();
        assert!(tracked <= SHARDS);
        // Two seconds on, every bucket has refilled: the sweep makes room.
        let later = 2 * SECOND_NS;
        assert_eq!(limiter.admit(ips[0], IpAction::Connect, later), IpAdmit::Yes);
        for &ip in &ips {
            let admitted = limiter.admit(ip, IpAction::Connect, later + SECOND_NS * 2);
            assert!(!matches!(admitted, IpAdmit::No(_)), "a new address is never refused for a full table");
        }
        let tracked: usize = limiter.shards.iter().map(|s| s.lock().unwrap().tats.len()).sum();
        assert!(tracked <= SHARDS);
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(1), 1);
        assert_eq!(retry_after_secs(SECOND_NS), 1);
        assert_eq!(retry_after_secs(SECOND_NS + 1), 2);
        assert_eq!(retry_after_secs(0), 1);
    }
}
