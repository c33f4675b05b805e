//! One read of an S3 object (or of a range of it) that holds up: a body
//! that breaks off is resumed from the offset reached, a request that fails
//! outright is tried again a little, with backoff.

use std::time::Duration;

use super::reader::S3Handle;
use crate::tier::TierError;

/// How many times a read is resumed after its body stream broke or the
/// request failed in a way worth trying again, beyond the SDK's own
/// retries of the request. The delays double from [`RESUME_FIRST_DELAY`]
/// (with jitter): 0.2 + 0.4 + ... + 6.4 s, about 13 s at most in all.
const RESUME_ATTEMPTS: u32 = 6;
const RESUME_FIRST_DELAY: Duration = Duration::from_millis(200);
/// How many of those may be requests that failed outright (no answer, or a
/// 5xx, after the SDK's own 4 attempts): a store that is down must fail a
/// read in seconds, not in a quarter of a minute per object, or a verify
/// of an unreachable tier would take hours.
const REQUEST_RETRIES: u32 = 2;

/// Why one attempt of a read failed.
#[derive(PartialEq)]
enum Failed {
    /// Not worth trying again (missing, refused).
    Final,
    /// The request failed outright.
    Request,
    /// The body broke off: resume from the offset reached.
    Body,
}

impl S3Handle {
    /// Reads `len` bytes of `key` (of `version`, else the current one) from
    /// `from` (to the end when `len` is `None`). The SDK retries a request that fails, but not a body that
    /// breaks off half way (a reset connection, a proxy timing out): such a
    /// read is resumed with a ranged GET from the offset reached, with
    /// backoff, up to [`RESUME_ATTEMPTS`] times. A missing object or refused
    /// credentials fail at once. Damage is left for the caller to judge
    /// from the bytes (pack ids are content hashes).
    pub(super) fn fetch(
        &self,
        key: &str,
        version: Option<&str>,
        from: u64,
        len: Option<u64>,
    ) -> Result<Vec<u8>, TierError> {
        let mut out = Vec::new();
        self.fetch_into(key, version, from, len, &mut out)?;
        Ok(out)
    }

    /// [`fetch`](Self::fetch) into `out` (cleared first), reusing its
    /// allocation: a reader's windows are refilled, not reallocated.
    pub(super) fn fetch_into(
        &self,
        key: &str,
        version: Option<&str>,
        from: u64,
        len: Option<u64>,
        out: &mut Vec<u8>,
    ) -> Result<(), TierError> {
        let full = format!("{}{}", self.settings.prefix, key);
        out.clear();
        // Exact: `reserve` may double a smaller buffer past the window.
        out.reserve_exact(len.unwrap_or(0).min(16 << 20) as usize);
        let mut attempt = 0;
        let mut request_failures = 0;
        // A resumed read must go on with the same object: pinned by the
        // ETag of the first answer (an object replaced meanwhile fails
        // with 412 instead of splicing two objects' bytes).
        let mut etag: Option<String> = None;
        loop {
            let at = from + out.len() as u64;
            let range = match len {
                Some(l) => {
                    let want = l - out.len() as u64;
                    if want == 0 {
                        return Ok(());
                    }
                    Some(format!("bytes={at}-{}", at + want - 1))
                }
                None if at > 0 => Some(format!("bytes={at}-")),
                None => None,
            };
            // Ok(true): the body ended; Err((why, error)).
            let r: Result<bool, (Failed, TierError)> = self.rt.block_on(async {
                let o = self
                    .client
                    .get_object()
                    .bucket(&self.settings.bucket)
                    .key(&full)
                    .set_version_id(version.map(str::to_string))
                    .set_if_match(etag.clone())
                    .set_range(range.clone())
                    .send()
                    .await;
                let mut o = match o {
                    // A range asked for and the whole object answered (a
                    // gateway that ignores Range): appending it would be
                    // wrong bytes.
                    Ok(o) if range.is_some() && o.content_range().is_none() => {
                        return Err((
                            Failed::Final,
                            TierError::Remote {
                                tier: self.name.clone(),
                                op: "get",
                                key: key.to_string(),
                                detail: "the store ignored the byte range asked for".into(),
                            },
                        ))
                    }
                    Ok(o) => o,
                    // The end of the object was reached exactly at a break.
                    Err(e) if len.is_none() && at > 0 && super::status(&e) == Some(416) => {
                        return Ok(true)
                    }
                    Err(e) => {
                        let e = super::tier_error(&self.name, &self.settings, "get", key, &e);
                        let why = if e.is_transient() {
                            Failed::Request
                        } else {
                            Failed::Final
                        };
                        return Err((why, e));
                    }
                };
                if etag.is_none() {
                    etag = o.e_tag().map(str::to_string);
                }
                loop {
                    match o.body.try_next().await {
                        Ok(Some(b)) => out.extend_from_slice(&b),
                        Ok(None) => return Ok(true),
                        Err(e) => {
                            return Err((
                                Failed::Body,
                                TierError::Unavailable {
                                    tier: self.name.clone(),
                                    op: "get",
                                    key: key.to_string(),
                                    detail: format!("download interrupted: {e}"),
                                },
                            ))
                        }
                    }
                }
            });
            let complete = match r {
                Ok(c) => c,
                Err((Failed::Final, e)) => return Err(e),
                Err((why, e))
                    if attempt >= RESUME_ATTEMPTS
                        || (why == Failed::Request && {
                            request_failures += 1;
                            request_failures > REQUEST_RETRIES
                        }) =>
                {
                    return Err(e.with_detail(|d| format!("{d} ({} attempts)", attempt + 1)))
                }
                Err(_) => false,
            };
            // A body that ended early without an error is a break too.
            let short = len.is_some_and(|l| (out.len() as u64) < l);
            if complete && (!short || attempt >= RESUME_ATTEMPTS) {
                return Ok(());
            }
            attempt += 1;
            std::thread::sleep(backoff(attempt));
        }
    }
}

/// The delay before resume `n` (from 1): doubling from
/// [`RESUME_FIRST_DELAY`], with up to half of it again as jitter so that
/// workers that broke together do not come back together.
fn backoff(n: u32) -> Duration {
    let base = RESUME_FIRST_DELAY * 2u32.pow(n.saturating_sub(1).min(6));
    let jitter = getrandom::u64().unwrap_or(0) % (base.as_millis() as u64 / 2 + 1);
    base + Duration::from_millis(jitter)
}
