//! Smoke tests for the S3 test servers in `support/s3.rs`: they prove each
//! server behaves like S3 in the ways coffer's S3 tier relies on (conditional
//! puts, ranges, pagination, SigV4, Object Lock, surviving a restart), using
//! the same SDK as the product.
//!
//! The SeaweedFS tests need the `weed` binary; without it they fail, telling
//! to run `scripts/install-seaweedfs`.

#[path = "support/s3.rs"]
mod s3;

use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{ObjectLockEnabled, ObjectLockMode};
use aws_sdk_s3::Client;
use s3::{error_code, error_text, http_status, run_async, S3Server};

/// Bytes 0..len with a pattern that makes an off-by-one range visible.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

async fn put(client: &Client, bucket: &str, key: &str, body: &[u8]) {
    client
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body.to_vec()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("put {key}: {}", error_text(&e)));
}

async fn get(client: &Client, bucket: &str, key: &str) -> Vec<u8> {
    let out = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("get {key}: {}", error_text(&e)));
    out.body.collect().await.unwrap().into_bytes().to_vec()
}

/// The S3 behaviour every backend must have, on one running server.
async fn check_basics(server: &S3Server) {
    let client = server.client();
    let bucket = server.bucket();
    let kind = server.kind();

    // Round trip.
    let data = pattern(1000);
    put(&client, bucket, "dir/object", &data).await;
    assert_eq!(get(&client, bucket, "dir/object").await, data, "{kind}");

    // HEAD of a missing key is a 404.
    let err = client
        .head_object()
        .bucket(bucket)
        .key("dir/missing")
        .send()
        .await
        .expect_err("head of a missing key must fail");
    assert_eq!(http_status(&err), Some(404), "{kind}: {}", error_text(&err));
    assert!(err.into_service_error().is_not_found(), "{kind}");

    // Ranged get returns exactly the requested bytes (the range is inclusive).
    let out = client
        .get_object()
        .bucket(bucket)
        .key("dir/object")
        .range("bytes=100-199")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{kind}: ranged get: {}", error_text(&e)));
    assert_eq!(out.content_length(), Some(100), "{kind}");
    assert_eq!(out.content_range(), Some("bytes 100-199/1000"), "{kind}");
    let range = out.body.collect().await.unwrap().into_bytes();
    assert_eq!(&range[..], &data[100..200], "{kind}");

    // If-None-Match: * creates once, then refuses with 412 and keeps the
    // original content.
    client
        .put_object()
        .bucket(bucket)
        .key("once")
        .if_none_match("*")
        .body(ByteStream::from_static(b"first"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{kind}: first conditional put: {}", error_text(&e)));
    let err = client
        .put_object()
        .bucket(bucket)
        .key("once")
        .if_none_match("*")
        .body(ByteStream::from_static(b"second"))
        .send()
        .await
        .expect_err("second If-None-Match put must be refused");
    assert_eq!(http_status(&err), Some(412), "{kind}: {}", error_text(&err));
    assert_eq!(
        error_code(&err).as_deref(),
        Some("PreconditionFailed"),
        "{kind}"
    );
    assert_eq!(get(&client, bucket, "once").await, b"first", "{kind}");

    // ListObjectsV2 pagination: 5 objects, 2 per page.
    for i in 0..5 {
        put(&client, bucket, &format!("page/{i}"), &[i]).await;
    }
    let mut pages = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let out = client
            .list_objects_v2()
            .bucket(bucket)
            .prefix("page/")
            .max_keys(2)
            .set_continuation_token(token.take())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{kind}: list: {}", error_text(&e)));
        let keys: Vec<String> = out
            .contents()
            .iter()
            .map(|o| o.key().unwrap().to_string())
            .collect();
        pages.push(keys);
        match out.next_continuation_token() {
            Some(t) if out.is_truncated() == Some(true) => token = Some(t.to_string()),
            _ => break,
        }
        assert!(pages.len() < 10, "{kind}: pagination does not end");
    }
    assert_eq!(
        pages,
        vec![
            vec!["page/0", "page/1"],
            vec!["page/2", "page/3"],
            vec!["page/4"]
        ],
        "{kind}"
    );

    // A wrong secret key is rejected (SigV4 is really checked).
    let bad = server.client_with_keys(server.access_key(), "not-the-secret-key");
    let err = bad
        .put_object()
        .bucket(bucket)
        .key("forged")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .expect_err("a wrong secret key must be rejected");
    assert_eq!(http_status(&err), Some(403), "{kind}: {}", error_text(&err));
    let err = client
        .head_object()
        .bucket(bucket)
        .key("forged")
        .send()
        .await
        .expect_err("the forged put must not have stored anything");
    assert_eq!(http_status(&err), Some(404), "{kind}");
}

/// Stop in the middle, check it is down, start again: same endpoint, same
/// objects, and the same client (one runtime, as in the product) works again.
/// `stop`/`start_again` block; calling them from async code is fine in tests.
async fn check_stop_start(server: &S3Server) {
    let kind = server.kind();
    let endpoint = server.endpoint();
    let client = server.client();
    let bucket = server.bucket();
    put(&client, bucket, "kept", b"survives a restart").await;

    server.stop();
    assert!(!server.is_running());
    let err = client
        .head_object()
        .bucket(bucket)
        .key("kept")
        .send()
        .await
        .expect_err("a stopped server must not answer");
    assert_eq!(
        http_status(&err),
        None,
        "{kind}: expected a transport error"
    );

    server.start_again();
    assert!(server.is_running());
    assert_eq!(server.endpoint(), endpoint);
    assert_eq!(get(&client, bucket, "kept").await, b"survives a restart");
    put(&client, bucket, "after", b"written after restart").await;
    assert_eq!(
        get(&client, bucket, "after").await,
        b"written after restart"
    );

    // Calling them twice is harmless.
    server.start_again();
    server.stop();
    server.stop();
}

/// Governance retention on a versioned, object-locked bucket: deleting the
/// locked version is refused, and the object is still there.
async fn check_object_lock(server: &S3Server) {
    let client = server.client();
    let bucket = server.bucket();

    let config = client
        .get_object_lock_configuration()
        .bucket(bucket)
        .send()
        .await
        .unwrap_or_else(|e| panic!("get object lock configuration: {}", error_text(&e)));
    assert_eq!(
        config
            .object_lock_configuration()
            .and_then(|c| c.object_lock_enabled()),
        Some(&ObjectLockEnabled::Enabled)
    );

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let put = client
        .put_object()
        .bucket(bucket)
        .key("locked")
        .body(ByteStream::from_static(b"retained"))
        .object_lock_mode(ObjectLockMode::Governance)
        .object_lock_retain_until_date(DateTime::from_secs(now + 86_400))
        .send()
        .await
        .unwrap_or_else(|e| panic!("put with retention: {}", error_text(&e)));
    let version = put
        .version_id()
        .expect("an object-locked bucket is versioned")
        .to_string();

    let versions = client
        .list_object_versions()
        .bucket(bucket)
        .prefix("locked")
        .send()
        .await
        .unwrap_or_else(|e| panic!("list versions: {}", error_text(&e)));
    let listed: Vec<&str> = versions
        .versions()
        .iter()
        .filter_map(|v| v.version_id())
        .collect();
    assert_eq!(listed, vec![version.as_str()]);

    let head = client
        .head_object()
        .bucket(bucket)
        .key("locked")
        .version_id(&version)
        .send()
        .await
        .unwrap_or_else(|e| panic!("head locked: {}", error_text(&e)));
    assert_eq!(head.object_lock_mode(), Some(&ObjectLockMode::Governance));

    let err = client
        .delete_object()
        .bucket(bucket)
        .key("locked")
        .version_id(&version)
        .send()
        .await
        .expect_err("deleting a version under retention must be refused");
    assert_eq!(http_status(&err), Some(403), "{}", error_text(&err));
    assert_eq!(error_code(&err).as_deref(), Some("AccessDenied"));

    let out = client
        .get_object()
        .bucket(bucket)
        .key("locked")
        .version_id(&version)
        .send()
        .await
        .unwrap_or_else(|e| panic!("get locked version: {}", error_text(&e)));
    assert_eq!(
        &out.body.collect().await.unwrap().into_bytes()[..],
        b"retained"
    );

    // The helper for a second object-locked bucket.
    server.create_bucket("coffer-locked-2", true);
    let config = client
        .get_object_lock_configuration()
        .bucket("coffer-locked-2")
        .send()
        .await
        .unwrap_or_else(|e| panic!("second bucket lock config: {}", error_text(&e)));
    assert_eq!(
        config
            .object_lock_configuration()
            .and_then(|c| c.object_lock_enabled()),
        Some(&ObjectLockEnabled::Enabled)
    );
}

#[tokio::test]
async fn s3s_fs_basics() {
    let server = s3::s3s_fs();
    check_basics(&server).await;
}

#[tokio::test]
async fn s3s_fs_stop_and_start_again() {
    let server = s3::s3s_fs();
    check_stop_start(&server).await;
}

/// Plain sync test: the harness needs no runtime from its caller.
#[test]
fn s3s_fs_env_and_settings() {
    let server = s3::s3s_fs();
    assert!(server.endpoint().starts_with("http://127.0.0.1:"));
    assert_eq!(server.region(), "us-east-1");
    let env = server.env();
    let value = |name: &str| {
        env.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(value("AWS_ACCESS_KEY_ID"), server.access_key());
    assert_eq!(value("AWS_SECRET_ACCESS_KEY"), server.secret_key());
    assert_eq!(value("AWS_REGION"), server.region());
    // Second (plain) bucket.
    server.create_bucket("second", false);
    let client = server.client();
    run_async(async {
        put(&client, "second", "k", b"v").await;
        assert_eq!(get(&client, "second", "k").await, b"v");
    });
}

#[tokio::test]
async fn seaweedfs_basics() {
    let server = s3::seaweedfs(false);
    check_basics(&server).await;
}

#[tokio::test]
async fn seaweedfs_stop_and_start_again() {
    let server = s3::seaweedfs(false);
    check_stop_start(&server).await;
}

#[tokio::test]
async fn seaweedfs_object_lock() {
    let server = s3::seaweedfs(true);
    check_object_lock(&server).await;
}
