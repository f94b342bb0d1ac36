//! What one delivery attempt came to, and when (or whether) to try again.
//!
//! Every sink reports one [`Outcome`] per attempt. Classification helpers turn what the far side said (an SMTP
//! reply code, an HTTP status, a DMP registry error code) into transient ([`Outcome::Retry`]) or permanent
//! ([`Outcome::Failed`]); a [`RetryPolicy`] (from `sinks.<name>.retry.*`) then says how long to wait before the
//! next attempt: exponential backoff with full jitter, bounded by a maximum number of attempts and a maximum
//! age, past which a retry becomes a dead letter. This module does no I/O.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The result of one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// The far side accepted the delivery.
    Delivered,
    /// A transient problem (network, 5xx, SMTP 4xx): try again later.
    Retry {
        /// What went wrong, without patient data.
        reason: String,
    },
    /// A permanent problem (validation, SMTP 5xx, DMP Failure with a permanent code): dead letter.
    Failed {
        /// What went wrong, without patient data.
        reason: String,
    },
    /// Nothing can be delivered and nothing is wrong with the message (no GP, no address, opposition).
    Undeliverable {
        /// Why, without patient data.
        reason: String,
    },
    /// Not sent, waiting for a person (identity review before a DMP feed).
    Held {
        /// Why, without patient data.
        reason: String,
    },
}

impl Outcome {
    /// The snake_case name used in the journal and in metric labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Retry { .. } => "retry",
            Outcome::Failed { .. } => "failed",
            Outcome::Undeliverable { .. } => "undeliverable",
            Outcome::Held { .. } => "held",
        }
    }

    /// The reason, for every outcome but [`Outcome::Delivered`].
    pub fn reason(&self) -> Option<&str> {
        match self {
            Outcome::Delivered => None,
            Outcome::Retry { reason }
            | Outcome::Failed { reason }
            | Outcome::Undeliverable { reason }
            | Outcome::Held { reason } => Some(reason),
        }
    }

    /// True when this outcome ends the message's life in this sink (everything but a retry).
    pub fn is_final(&self) -> bool {
        !matches!(self, Outcome::Retry { .. })
    }

    /// A transient outcome.
    pub fn retry(reason: impl Into<String>) -> Outcome {
        Outcome::Retry { reason: reason.into() }
    }

    /// A permanent failure.
    pub fn failed(reason: impl Into<String>) -> Outcome {
        Outcome::Failed { reason: reason.into() }
    }
}

/// `sinks.<name>.retry.*`: exponential backoff with full jitter, bounded by attempts and age.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Wait before the second attempt, in milliseconds (1000).
    pub initial_delay_ms: u64,
    /// Longest wait between two attempts, in milliseconds (300000 = 5 min).
    pub max_delay_ms: u64,
    /// Growth factor of the wait from one attempt to the next (2.0).
    pub multiplier: f64,
    /// Most attempts, the first one included (10); then a retry becomes a dead letter.
    pub max_attempts: u32,
    /// Oldest a message may get, counted from its first attempt, in seconds (86400 = 1 day).
    pub max_age_secs: u64,
    /// Full jitter: each wait is drawn uniformly in [0, computed wait] (true); false gives the computed wait.
    pub jitter: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_delay_ms: 1000,
            max_delay_ms: 300_000,
            multiplier: 2.0,
            max_attempts: 10,
            max_age_secs: 86_400,
            jitter: true,
        }
    }
}

/// What to do after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Try again after this wait.
    RetryAfter(Duration),
    /// Stop: the outcome is final (delivered, failed, undeliverable, held).
    Done,
    /// Stop: a transient problem lasted past `max_attempts` or `max_age_secs`; dead letter with this reason.
    GiveUp {
        /// The last transient reason and the bound that was reached.
        reason: String,
    },
}

impl RetryPolicy {
    /// Checks the values, naming the key under `prefix` (e.g. `sinks.mss.retry`) that is wrong.
    pub fn check(&self, prefix: &str) -> Result<(), (String, String)> {
        let bad = |key: &str, why: &str| Err((format!("{prefix}.{key}"), why.to_string()));
        if self.max_attempts == 0 {
            return bad("max_attempts", "must be at least 1");
        }
        if !(self.multiplier.is_finite() && self.multiplier >= 1.0) {
            return bad("multiplier", "must be a number >= 1");
        }
        if self.max_delay_ms < self.initial_delay_ms {
            return bad("max_delay_ms", "must be >= initial_delay_ms");
        }
        Ok(())
    }

    /// The wait before attempt `attempt + 1`, after `attempt` (>= 1) attempts, before jitter.
    pub fn base_delay(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(64) as i32;
        let ms = self.initial_delay_ms as f64 * self.multiplier.powi(exp);
        Duration::from_millis(ms.min(self.max_delay_ms as f64) as u64)
    }

    /// The wait before the next attempt, after `attempt` (>= 1) attempts, jittered if configured.
    pub fn delay(&self, attempt: u32) -> Duration {
        let base = self.base_delay(attempt);
        if self.jitter && !base.is_zero() {
            Duration::from_millis(fastrand::u64(0..=base.as_millis() as u64))
        } else {
            base
        }
    }

    /// Decides what follows `outcome`, the result of attempt number `attempt` (>= 1), `age` after the first one.
    pub fn next(&self, outcome: &Outcome, attempt: u32, age: Duration) -> Next {
        let Outcome::Retry { reason } = outcome else {
            return Next::Done;
        };
        if attempt >= self.max_attempts {
            return Next::GiveUp { reason: format!("{reason} (gave up after {attempt} attempts)") };
        }
        let wait = self.delay(attempt);
        if age + wait > Duration::from_secs(self.max_age_secs) {
            return Next::GiveUp {
                reason: format!("{reason} (gave up: older than {} s)", self.max_age_secs),
            };
        }
        Next::RetryAfter(wait)
    }
}

/// Classifies an SMTP reply: 2xx delivered, 4xx transient, 5xx (and anything else) permanent.
pub fn classify_smtp(code: u16, text: &str) -> Outcome {
    match code {
        200..=299 => Outcome::Delivered,
        400..=499 => Outcome::retry(format!("SMTP {code} {text}")),
        _ => Outcome::failed(format!("SMTP {code} {text}")),
    }
}

/// Classifies an HTTP status: 2xx delivered; 408, 429 and 5xx transient; other 4xx permanent.
pub fn classify_http(status: u16) -> Outcome {
    match status {
        200..=299 => Outcome::Delivered,
        408 | 429 | 500..=599 => Outcome::retry(format!("HTTP {status}")),
        _ => Outcome::failed(format!("HTTP {status}")),
    }
}

/// Classifies a network-level error (connect refused, reset, timeout): always transient.
pub fn classify_network(what: impl std::fmt::Display) -> Outcome {
    Outcome::retry(format!("network: {what}"))
}

/// DMP / XDS registry error codes known to be transient: the registry or repository is busy or unavailable.
/// Every other code, and every XDS code about the submission's content, is permanent.
const TRANSIENT_REGISTRY_CODES: &[&str] = &[
    "XDSRegistryBusy",
    "XDSRepositoryBusy",
    "XDSRegistryOutOfResources",
    "XDSRepositoryOutOfResources",
    "XDSRegistryNotAvailable",
    "XDSRegistryError",
    "XDSRepositoryError",
    "DMPTechnicalError",
    "DMPUnavailable",
    "DMPTimeout",
];

/// True when a RegistryError `errorCode` is transient (see `TRANSIENT_REGISTRY_CODES`); codes are compared
/// case-insensitively.
pub fn registry_code_is_transient(code: &str) -> bool {
    TRANSIENT_REGISTRY_CODES.iter().any(|c| c.eq_ignore_ascii_case(code.trim()))
}

/// Runs `attempt` until its outcome is final or the policy gives up; returns the last outcome (a give-up
/// becomes [`Outcome::Failed`]) and the number of attempts made. `attempt` receives the attempt number (1..).
pub async fn until_final<F, Fut>(policy: &RetryPolicy, mut attempt: F) -> (Outcome, u32)
where
    F: FnMut(u32) -> Fut,
    Fut: std::future::Future<Output = Outcome>,
{
    let started = std::time::Instant::now();
    let mut n = 0;
    loop {
        n += 1;
        let outcome = attempt(n).await;
        match policy.next(&outcome, n, started.elapsed()) {
            Next::Done => return (outcome, n),
            Next::GiveUp { reason } => return (Outcome::Failed { reason }, n),
            Next::RetryAfter(wait) => tokio::time::sleep(wait).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed() -> RetryPolicy {
        RetryPolicy { jitter: false, ..RetryPolicy::default() }
    }

    #[test]
    fn backoff_doubles_then_caps() {
        let p = RetryPolicy { max_delay_ms: 5000, ..fixed() };
        let waits: Vec<u64> = (1..=5).map(|a| p.delay(a).as_millis() as u64).collect();
        assert_eq!(waits, vec![1000, 2000, 4000, 5000, 5000]);
    }

    #[test]
    fn jitter_stays_within_the_computed_wait_and_varies() {
        let p = RetryPolicy::default();
        let draws: Vec<Duration> = (0..200).map(|_| p.delay(4)).collect();
        assert!(draws.iter().all(|d| *d <= Duration::from_millis(8000)));
        let first = draws[0];
        assert!(draws.iter().any(|d| *d != first), "jitter gives different waits");
    }

    #[test]
    fn gives_up_after_max_attempts_and_max_age() {
        let p = RetryPolicy { max_attempts: 3, max_age_secs: 10, ..fixed() };
        let r = Outcome::retry("SMTP 421 busy");
        assert_eq!(p.next(&r, 1, Duration::ZERO), Next::RetryAfter(Duration::from_secs(1)));
        match p.next(&r, 3, Duration::ZERO) {
            Next::GiveUp { reason } => assert!(reason.contains("3 attempts") && reason.contains("421")),
            other => panic!("expected give up, got {other:?}"),
        }
        match p.next(&r, 2, Duration::from_secs(9)) {
            Next::GiveUp { reason } => assert!(reason.contains("older than 10 s")),
            other => panic!("expected give up, got {other:?}"),
        }
        assert_eq!(p.next(&Outcome::Delivered, 1, Duration::ZERO), Next::Done);
        assert_eq!(p.next(&Outcome::failed("SMTP 550"), 1, Duration::ZERO), Next::Done);
    }

    #[test]
    fn check_names_the_key() {
        let p = RetryPolicy { max_attempts: 0, ..fixed() };
        assert_eq!(p.check("sinks.mss.retry").unwrap_err().0, "sinks.mss.retry.max_attempts");
        let p = RetryPolicy { multiplier: 0.5, ..fixed() };
        assert_eq!(p.check("sinks.dmp.retry").unwrap_err().0, "sinks.dmp.retry.multiplier");
        assert!(RetryPolicy::default().check("x").is_ok());
    }

    #[tokio::test]
    async fn until_final_retries_transient_then_stops() {
        let p = RetryPolicy { max_attempts: 5, initial_delay_ms: 1, max_delay_ms: 4, ..fixed() };
        let (outcome, n) = until_final(&p, |n| async move {
            if n < 3 { Outcome::retry("SMTP 421") } else { Outcome::Delivered }
        })
        .await;
        assert_eq!((outcome, n), (Outcome::Delivered, 3));
        let (outcome, n) = until_final(&p, |_| async { Outcome::retry("down") }).await;
        assert_eq!(n, 5);
        assert!(outcome.reason().unwrap().contains("gave up after 5 attempts"));
    }

    #[test]
    fn classifications() {
        assert_eq!(classify_smtp(250, "ok"), Outcome::Delivered);
        assert_eq!(classify_smtp(451, "try later").as_str(), "retry");
        assert_eq!(classify_smtp(550, "no such user").as_str(), "failed");
        assert_eq!(classify_http(503).as_str(), "retry");
        assert_eq!(classify_http(429).as_str(), "retry");
        assert_eq!(classify_http(400).as_str(), "failed");
        assert_eq!(classify_http(204), Outcome::Delivered);
        assert!(registry_code_is_transient("XDSRegistryBusy"));
        assert!(!registry_code_is_transient("XDSPatientIdDoesNotMatch"));
        assert!(!registry_code_is_transient("DMPClosed"));
    }

    #[test]
    fn outcome_serializes_with_its_reason() {
        let json = serde_json::to_string(&Outcome::Held { reason: "INS not qualified".into() }).unwrap();
        assert_eq!(json, r#"{"outcome":"held","reason":"INS not qualified"}"#);
        assert!(!Outcome::retry("x").is_final());
        assert!(Outcome::Undeliverable { reason: "no GP".into() }.is_final());
    }
}
