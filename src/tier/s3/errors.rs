//! What a failed S3 request means: absent, worth trying again, or a
//! refusal to explain (credentials, a missing bucket), in one line that
//! says what to do.

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

use super::{S3Settings, TierError};

/// The [`TierError`] for a failed request: absent objects are
/// [`TierError::NotFound`]; the rest say what to do about them.
pub(super) fn tier_error<E: ProvideErrorMetadata + std::error::Error + 'static>(
    tier: &str,
    settings: &S3Settings,
    op: &'static str,
    key: &str,
    e: &SdkError<E>,
) -> TierError {
    let status = status(e);
    let code = e.code().map(str::to_string);
    // A missing bucket (or a wrong endpoint answering 404 with it) is not
    // a missing object: callers treat "not found" as "absent here".
    if code.as_deref() != Some("NoSuchBucket")
        && (status == Some(404) || matches!(code.as_deref(), Some("NoSuchKey" | "NotFound")))
    {
        return TierError::NotFound {
            tier: tier.to_string(),
            key: key.to_string(),
        };
    }
    let detail = match (e, status, code.as_deref()) {
        _ if no_credentials(e) => "no AWS credentials were found: set AWS_ACCESS_KEY_ID and \
            AWS_SECRET_ACCESS_KEY (or AWS_PROFILE with ~/.aws/credentials), or run where an \
            instance or container role provides them"
            .to_string(),
        (SdkError::DispatchFailure(_) | SdkError::TimeoutError(_), _, _) => format!(
            "cannot reach {} ({}); the copy stays pending and `coffer sync` uploads it later",
            settings.endpoint.as_deref().unwrap_or("the S3 endpoint"),
            source_chain(e)
        ),
        (_, _, Some(c @ ("InvalidAccessKeyId" | "SignatureDoesNotMatch" | "AccessDenied" | "ExpiredToken"))) => format!(
            "S3 refused the credentials or permissions ({c}); check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the profile, and the bucket policy"
        ),
        (_, _, Some("NoSuchBucket")) => format!("bucket {:?} does not exist; create it first", settings.bucket),
        (_, s, c) => format!(
            "{} (HTTP {}{})",
            e.message().unwrap_or("request failed"),
            s.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
            c.map(|c| format!(", {c}")).unwrap_or_default()
        ),
    };
    let (tier, key) = (tier.to_string(), key.to_string());
    if worth_retrying(e) {
        TierError::Unavailable {
            tier,
            op,
            key,
            detail,
        }
    } else {
        TierError::Remote {
            tier,
            op,
            key,
            detail,
        }
    }
}

/// True when the request was never sent because the credential chain
/// found nothing (the SDK reports it as a dispatch failure, with every
/// provider it tried on its own line).
fn no_credentials<E>(e: &SdkError<E>) -> bool
where
    E: std::error::Error + 'static,
{
    matches!(e, SdkError::DispatchFailure(_))
        && source_chain(e).contains("no credentials found in chain")
}

/// The HTTP status of a failed request, when a reply came.
pub(super) fn status<E>(e: &SdkError<E>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

/// Whether a request that failed (after the SDK's own retries) is worth
/// trying again later in the same run: the endpoint did not answer, or
/// answered with a server error. Refusals (credentials, a missing bucket
/// or object, a bad request) are not.
fn worth_retrying<E: std::error::Error + 'static>(e: &SdkError<E>) -> bool {
    if no_credentials(e) {
        return false;
    }
    match e {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            true
        }
        _ => status(e).is_some_and(|s| s >= 500 || s == 429),
    }
}

/// The causes under a request error, joined (the SDK nests them).
fn source_chain(e: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        parts.push(s.to_string());
        cur = s.source();
    }
    if parts.is_empty() {
        e.to_string()
    } else {
        parts.join(": ")
    }
}
