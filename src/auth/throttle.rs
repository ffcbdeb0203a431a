//! Slowing down a peer that keeps sending wrong keys: past [`FREE_FAILURES`] failures within
//! [`WINDOW`], each further refusal from that IP address is answered only after a delay that
//! grows with its count, up to [`MAX_DELAY`]. A right key clears the peer's count. The table is
//! bounded ([`MAX_PEERS`]): when full, stale entries go first, then the whole table.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures a peer may make within [`WINDOW`] before its refusals are delayed.
pub const FREE_FAILURES: u32 = 10;
/// How long a peer's failures are remembered after its last one.
pub const WINDOW: Duration = Duration::from_secs(60);
/// The longest delay before a refusal.
pub const MAX_DELAY: Duration = Duration::from_secs(2);
/// Peers remembered at once.
const MAX_PEERS: usize = 4096;
/// Added delay per failure past the free ones.
const STEP: Duration = Duration::from_millis(100);

/// Recent key failures by peer address.
#[derive(Debug, Default)]
pub struct Throttle {
    peers: Mutex<HashMap<IpAddr, (u32, Instant)>>,
    /// Whether any failure was ever recorded: until then a right key takes no lock.
    any: AtomicBool,
}

impl Throttle {
    /// Records a failure from `peer` and says how long to wait before refusing it.
    pub fn failed(&self, peer: IpAddr) -> Duration {
        let now = Instant::now();
        self.any.store(true, Ordering::Relaxed);
        let mut peers = self
            .peers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if peers.len() >= MAX_PEERS && !peers.contains_key(&peer) {
            peers.retain(|_, (_, last)| now.duration_since(*last) < WINDOW);
            if peers.len() >= MAX_PEERS {
                peers.clear();
            }
        }
        let entry = peers.entry(peer).or_insert((0, now));
        if now.duration_since(entry.1) >= WINDOW {
            entry.0 = 0;
        }
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now;
        let excess = entry.0.saturating_sub(FREE_FAILURES);
        STEP.saturating_mul(excess).min(MAX_DELAY)
    }

    /// A right key from `peer`: its failures are forgotten.
    pub fn succeeded(&self, peer: IpAddr) {
        if !self.any.load(Ordering::Relaxed) {
            return;
        }
        let mut peers = self
            .peers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        peers.remove(&peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_past_the_free_failures_and_a_right_key_clears_them() {
        let throttle = Throttle::default();
        let peer: IpAddr = [10, 0, 0, 1].into();
        let other: IpAddr = [10, 0, 0, 2].into();
        for _ in 0..FREE_FAILURES {
            assert_eq!(throttle.failed(peer), Duration::ZERO);
        }
        assert_eq!(throttle.failed(peer), STEP);
        assert_eq!(throttle.failed(peer), STEP * 2);
        assert_eq!(throttle.failed(other), Duration::ZERO, "counted per peer");
        for _ in 0..100 {
            throttle.failed(peer);
        }
        assert_eq!(throttle.failed(peer), MAX_DELAY);
        throttle.succeeded(peer);
        assert_eq!(throttle.failed(peer), Duration::ZERO);
    }

    #[test]
    fn the_table_stays_bounded() {
        let throttle = Throttle::default();
        for index in 0..(MAX_PEERS as u32 + 10) {
            throttle.failed(IpAddr::from(index.to_be_bytes()));
        }
        let peers = throttle.peers.lock().expect("lock");
        assert!(peers.len() <= MAX_PEERS);
    }
}
