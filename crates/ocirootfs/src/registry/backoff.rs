//! Retries with exponential backoff, within an attempt count and a time budget, and the
//! client's timeouts.

use std::time::Duration;

use crate::source::SourceError;

/// At most this many attempts per request ...
const ATTEMPTS: u32 = 6;
/// ... and no new attempt once this much time has passed since the first.
const RETRY_BUDGET: Duration = Duration::from_secs(30);
/// Connecting to a registry or token server may take this long ...
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// ... and each read of an answer this long.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(120);
const FIRST_DELAY: Duration = Duration::from_millis(250);
const MAX_DELAY: Duration = Duration::from_secs(4);

/// Exponential backoff for one request: 0.25 s, 0.5 s, 1 s, 2 s, 4 s (under 8 s in all).
pub(super) struct Backoff {
    attempts: u32,
    delay: Duration,
    start: std::time::Instant,
}

impl Backoff {
    pub(super) fn new() -> Backoff {
        Backoff {
            attempts: 1,
            delay: FIRST_DELAY,
            start: std::time::Instant::now(),
        }
    }

    /// After a failed attempt: waits and returns `None` when another attempt may follow,
    /// else gives the error back (with the attempts made, if it is about reaching the
    /// registry).
    pub(super) async fn after(&mut self, err: SourceError, transient: bool) -> Option<SourceError> {
        let spent = self.start.elapsed();
        if !transient || self.attempts >= ATTEMPTS || spent + self.delay > RETRY_BUDGET {
            return Some(match err {
                SourceError::Unreachable {
                    registry,
                    image,
                    message,
                    hint,
                    ..
                } => SourceError::Unreachable {
                    registry,
                    image,
                    attempts: self.attempts,
                    secs: spent.as_secs_f64().round() as u64,
                    message,
                    hint,
                },
                e => e,
            });
        }
        let why = match &err {
            SourceError::Unreachable { message, .. } => message.clone(),
            e => e.to_string(),
        };
        tracing::warn!(
            "{why}; retrying in {:?} (attempt {} of {ATTEMPTS})",
            self.delay,
            self.attempts + 1
        );
        tokio::time::sleep(self.delay).await;
        self.attempts += 1;
        self.delay = (self.delay * 2).min(MAX_DELAY);
        None
    }
}

/// Runs `f` until it succeeds, fails for good, or the retry budget is spent. `f` gives errors
/// already classified (see [`classify`](super::errors::classify)).
pub(super) async fn retry<T, F, Fut>(mut f: F) -> Result<T, SourceError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, (SourceError, bool)>>,
{
    let mut backoff = Backoff::new();
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err((err, transient)) => {
                if let Some(e) = backoff.after(err, transient).await {
                    return Err(e);
                }
            }
        }
    }
}
