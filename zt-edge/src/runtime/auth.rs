//! Registration: stored keys for claims, per-address rate limiting of failures, and the
//! audit line for every refusal.
//!
//! Keys come from the current [`Snapshot`](super::snapshot::Snapshot), an in-memory map,
//! so a registration never touches the database. The peer learns nothing about why it was
//! refused (the protocol answers every failure alike); the audit log and the failure
//! counter do.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use arc_swap::ArcSwap;
use zt_proto::{Admission, Authenticator, Claim, RefusalReason, VerifyKey};

use super::config::AuthRateLimit;
use super::metrics::Metrics;
use super::snapshot::Snapshot;
use crate::audit::{block_of, AuditLog, AuthRefusal, PeerRole, RefusalLogged};

struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Token buckets of failures per address block, in a table of bounded size.
pub(crate) struct FailureLimiter {
    config: AuthRateLimit,
    table: Mutex<HashMap<IpAddr, Bucket>>,
}

impl FailureLimiter {
    pub(crate) fn new(config: AuthRateLimit) -> Self {
        Self {
            config,
            table: Mutex::new(HashMap::new()),
        }
    }

    fn refill(&self, bucket: &mut Bucket, now: Instant) {
        let minutes = now.duration_since(bucket.updated).as_secs_f64() / 60.0;
        bucket.tokens =
            (bucket.tokens + minutes * self.config.per_minute).min(f64::from(self.config.burst));
        bucket.updated = now;
    }

    /// Whether the block of `ip` has failures left to spend.
    pub(crate) fn admits(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        match table.get_mut(&block_of(ip)) {
            None => true,
            Some(bucket) => {
                self.refill(bucket, now);
                bucket.tokens >= 1.0
            }
        }
    }

    /// Spends one failure of the block of `ip`; true when the block still had one to spend
    /// (the failure was within its budget).
    pub(crate) fn record_failure(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let block = block_of(ip);
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        if !table.contains_key(&block) && table.len() >= self.config.table_size.max(1) {
            // Forget the least recently updated block. A scan of a few thousand entries
            // happens only while the table is full of failing sources, which is rare.
            if let Some(oldest) = table
                .iter()
                .min_by_key(|(_, b)| b.updated)
                .map(|(ip, _)| *ip)
            {
                table.remove(&oldest);
            }
        }
        let burst = f64::from(self.config.burst);
        let bucket = table.entry(block).or_insert(Bucket {
            tokens: burst,
            updated: now,
        });
        self.refill(bucket, now);
        let within = bucket.tokens >= 1.0;
        bucket.tokens = (bucket.tokens - 1.0).max(0.0);
        within
    }
}

/// The edge's [`Authenticator`]: keys from the current snapshot, failures limited and
/// audited.
pub(crate) struct EdgeAuthenticator {
    pub(crate) snapshot: Arc<ArcSwap<Snapshot>>,
    pub(crate) limiter: FailureLimiter,
    pub(crate) audit: Arc<AuditLog>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) draining: Arc<std::sync::atomic::AtomicBool>,
}

impl EdgeAuthenticator {
    /// A cloudflared registration was refused: one audit line with the true reason, and a
    /// failure counted against the source when `counts` (bad credentials, malformed input).
    pub(crate) fn refused_cloudflared(
        &self,
        source: SocketAddr,
        tunnel: Option<uuid::Uuid>,
        why: &str,
        counts: bool,
    ) {
        let within_budget = counts && self.limiter.record_failure(source.ip());
        let claimed = tunnel.map(|t| t.to_string());
        self.metrics.auth_refused();
        let record = AuthRefusal::new(source.ip(), PeerRole::Connector, claimed.as_deref(), why);
        if self.audit_refusal(&record, within_budget) {
            tracing::info!(remote = %source, claimed = ?claimed, reason = %why, "cloudflared authentication refused");
        } else {
            tracing::debug!(remote = %source, claimed = ?claimed, reason = %why, "cloudflared authentication refused again");
        }
    }

    /// Audits a refusal: its own line when it was within the source's failure budget
    /// (so bounded by the budget), else coalesced with the source's other refusals of the
    /// same reason (see the audit log's module docs). True when it got its own line, which
    /// is when it deserves an info line too: repeats go to debug, and the audit log's
    /// periodic flush reports their count.
    fn audit_refusal(&self, record: &AuthRefusal, within_budget: bool) -> bool {
        let logged = if within_budget {
            self.audit
                .record_auth_refusal_at_once(record)
                .map(|()| RefusalLogged::Written)
        } else {
            self.audit.record_auth_refusal(record)
        };
        match logged {
            Ok(RefusalLogged::Coalesced) => false,
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %e, "cannot write the audit log");
                true
            }
        }
    }
}

impl Authenticator for EdgeAuthenticator {
    fn admit(&self, source: SocketAddr) -> Admission {
        if self.draining.load(std::sync::atomic::Ordering::Acquire) {
            Admission::Draining
        } else if self.limiter.admits(source.ip()) {
            Admission::Admit
        } else {
            Admission::RateLimited
        }
    }

    fn verify_key(&self, claim: &Claim) -> Option<VerifyKey> {
        let snapshot = self.snapshot.load();
        match claim {
            Claim::Connector(c) => snapshot
                .tunnels
                .get(&c.tunnel_id)
                .filter(|t| {
                    // Account tags are not secret; a plain comparison is fine.
                    t.account_tag == c.account_tag
                })
                .map(|t| VerifyKey::Shared(t.key.clone())),
            Claim::Client(c) => snapshot
                .devices
                .get(&c.device_id)
                // A sign-in past its end (`zt login` again) or an expired service token no
                // longer registers.
                .filter(|d| {
                    d.expires_at
                        .is_none_or(|at| at > crate::timestamp::Timestamp::now())
                })
                .map(|d| d.key.clone()),
            _ => None,
        }
    }

    fn refused(&self, source: SocketAddr, claim: Option<&Claim>, reason: RefusalReason) {
        let (role, claimed) = match claim {
            Some(Claim::Connector(c)) => (PeerRole::Connector, Some(c.tunnel_id.to_string())),
            Some(Claim::Client(c)) => (PeerRole::Client, Some(c.device_id.to_string())),
            // Before a claim (a malformed first frame) the role is unknown; the audit line
            // says connector, the role most likely to be automated.
            _ => (PeerRole::Connector, None),
        };
        let counts = matches!(
            reason,
            RefusalReason::UnknownIdentity | RefusalReason::BadProof | RefusalReason::Malformed
        );
        let within_budget = counts && self.limiter.record_failure(source.ip());
        let why = match reason {
            RefusalReason::UnknownIdentity => {
                "unknown identity: no such tunnel or device, deleted or revoked, sign-in expired, or wrong account tag".to_owned()
            }
            RefusalReason::BadProof => "proof does not match the stored key".to_owned(),
            RefusalReason::UnsupportedVersion(v) => format!("unsupported protocol version {v}"),
            RefusalReason::Timeout => "did not register in time".to_owned(),
            RefusalReason::Malformed => "malformed register frame".to_owned(),
            RefusalReason::RateLimited => "rate-limited after repeated failures".to_owned(),
            RefusalReason::Draining => "edge is draining".to_owned(),
            RefusalReason::Internal => "internal error".to_owned(),
            other => format!("{other:?}"),
        };
        self.metrics.auth_refused();
        let record = AuthRefusal::new(source.ip(), role, claimed.as_deref(), &why);
        if self.audit_refusal(&record, within_budget) {
            tracing::info!(remote = %source, ?role, claimed = ?claimed, reason = %why, "authentication refused");
        } else {
            tracing::debug!(remote = %source, ?role, claimed = ?claimed, reason = %why, "authentication refused again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_limited_per_block_and_the_table_stays_bounded() {
        let limiter = FailureLimiter::new(AuthRateLimit {
            burst: 3,
            per_minute: 0.0,
            table_size: 4,
        });
        let a: IpAddr = "2001:db8:1:2::5".parse().unwrap();
        let same_64: IpAddr = "2001:db8:1:2::99".parse().unwrap();
        for _ in 0..3 {
            assert!(limiter.admits(a));
            assert!(limiter.record_failure(a), "within the budget");
        }
        assert!(!limiter.admits(a));
        assert!(!limiter.record_failure(a), "beyond the budget");
        assert!(!limiter.admits(same_64), "a /64 shares one bucket");
        assert!(limiter.admits("2001:db8:1:3::5".parse().unwrap()));
        for i in 0..10u8 {
            limiter.record_failure(IpAddr::from([192, 0, 2, i]));
        }
        assert!(limiter.table.lock().unwrap().len() <= 4);
    }
}
