//! Smoke tests for the S3 test servers in `support/s3.rs`: they prove each
//! server behaves like S3 in the ways coffer's S3 tier relies on (conditional
//! puts, ranges, pagination, SigV4, Object Lock, surviving a restart), using
//! the same SDK as the product.
//!
//! The fault proxy of `support/faultproxy.rs` is tested here too, against
//! both servers: clean passthrough (SigV4 still valid through it, 100-continue)
//! and each fault as the SDK sees it.
//!
//! The SeaweedFS tests need the `weed` binary; without it they fail, telling
//! to run `scripts/install-seaweedfs`.

#[path = "support/faultproxy.rs"]
mod faultproxy;
#[path = "support/s3.rs"]
mod s3;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{ObjectLockEnabled, ObjectLockMode};
use aws_sdk_s3::Client;
use faultproxy::{Fault, FaultProxy, Rules, Scripted};
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

// ---------------------------------------------------------------------------
// The fault proxy

/// A client for `server` that goes through `proxy`: the settings of
/// `S3Server::client()` with the proxy as endpoint and the given retries.
fn proxied_client(server: &S3Server, proxy: &FaultProxy, retry: RetryConfig) -> Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(proxy.endpoint())
        .force_path_style(true)
        .region(Region::new(server.region().to_string()))
        .credentials_provider(Credentials::new(
            server.access_key(),
            server.secret_key(),
            None,
            None,
            "test",
        ))
        .retry_config(retry)
        .build();
    Client::from_conf(config)
}

/// Standard retries, 3 attempts, with a short backoff to keep tests fast.
fn three_attempts() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(3)
        .with_initial_backoff(Duration::from_millis(10))
}

/// Every operation coffer uses passes through an idle proxy unchanged, and
/// the server accepts the signatures (made for the proxy's Host).
async fn check_proxy_passthrough(server: &S3Server) {
    let kind = server.kind();
    let bucket = server.bucket();
    let proxy = FaultProxy::start(&server.endpoint());
    let client = proxied_client(server, &proxy, RetryConfig::disabled());
    let small = pattern(1024);
    let big = pattern(5 * 1024 * 1024);

    put(&client, bucket, "proxied/small", &small).await;
    put(&client, bucket, "proxied/big", &big).await;
    assert_eq!(get(&client, bucket, "proxied/small").await, small, "{kind}");
    assert_eq!(get(&client, bucket, "proxied/big").await, big, "{kind}");
    let out = client
        .get_object()
        .bucket(bucket)
        .key("proxied/big")
        .range("bytes=1000000-1000099")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{kind}: ranged get: {}", error_text(&e)));
    assert_eq!(out.content_length(), Some(100), "{kind}");
    let range = out.body.collect().await.unwrap().into_bytes();
    assert_eq!(&range[..], &big[1_000_000..1_000_100], "{kind}");
    let head = client
        .head_object()
        .bucket(bucket)
        .key("proxied/big")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{kind}: head: {}", error_text(&e)));
    assert_eq!(head.content_length(), Some(big.len() as i64), "{kind}");
    let list = client
        .list_objects_v2()
        .bucket(bucket)
        .prefix("proxied/")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{kind}: list: {}", error_text(&e)));
    let keys: Vec<&str> = list.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["proxied/big", "proxied/small"], "{kind}");
    client
        .delete_object()
        .bucket(bucket)
        .key("proxied/small")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{kind}: delete: {}", error_text(&e)));
    // Error responses pass through too (HEAD: a 404 without a body).
    let err = client
        .head_object()
        .bucket(bucket)
        .key("proxied/small")
        .send()
        .await
        .expect_err("deleted");
    assert_eq!(http_status(&err), Some(404), "{kind}: {}", error_text(&err));

    let stats = proxy.stats();
    assert_eq!(stats.requests, 9, "{kind}: {stats:?}");
    assert_eq!(stats.forwarded, 9, "{kind}: {stats:?}");
    assert_eq!(stats.faults(), 0, "{kind}: {stats:?}");
    // The data really is on the server.
    assert_eq!(get(&server.client(), bucket, "proxied/big").await, big);
}

/// Reads one response head from a raw connection.
fn read_raw_head(reader: &mut impl BufRead) -> String {
    let mut head = String::new();
    loop {
        let n = reader.read_line(&mut head).expect("read response head");
        assert!(n > 0, "connection closed in a head: {head:?}");
        if head.ends_with("\r\n\r\n") {
            return head;
        }
    }
}

/// `Expect: 100-continue` through the proxy: the SDK does not send it, other
/// clients do. A presigned PUT lets a raw socket make a request the server
/// accepts; the server's `100 Continue` must arrive before the body is sent,
/// then the final answer, and the connection stays usable (keep-alive).
/// Blocking I/O: call it outside a runtime.
fn check_proxy_expect_continue(server: &S3Server) {
    let kind = server.kind();
    let proxy = FaultProxy::start(&server.endpoint());
    let client = proxied_client(server, &proxy, RetryConfig::disabled());
    let bucket = server.bucket().to_string();
    let presign = || PresigningConfig::expires_in(Duration::from_secs(600)).unwrap();
    let (put_req, get_req) = run_async(async {
        let put = client
            .put_object()
            .bucket(&bucket)
            .key("expect/object")
            .presigned(presign())
            .await
            .unwrap();
        let get = client
            .get_object()
            .bucket(&bucket)
            .key("expect/object")
            .presigned(presign())
            .await
            .unwrap();
        (put, get)
    });
    let prefix = proxy.endpoint();
    let target = |uri: &str| uri.strip_prefix(&prefix).unwrap().to_string();
    let extra = |req: &aws_sdk_s3::presigning::PresignedRequest| {
        req.headers()
            .filter(|(name, _)| !name.eq_ignore_ascii_case("host"))
            .map(|(name, value)| format!("{name}: {value}\r\n"))
            .collect::<String>()
    };
    let body = pattern(300_000);

    let stream = TcpStream::connect(("127.0.0.1", proxy.port())).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    write!(
        writer,
        "PUT {} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n{}Content-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        target(put_req.uri()),
        proxy.port(),
        extra(&put_req),
        body.len()
    )
    .unwrap();
    let interim = read_raw_head(&mut reader);
    assert!(
        interim.starts_with("HTTP/1.1 100"),
        "{kind}: expected 100 Continue first, got {interim:?}"
    );
    writer.write_all(&body).unwrap();
    let head = read_raw_head(&mut reader);
    assert!(head.starts_with("HTTP/1.1 200"), "{kind}: put: {head:?}");
    let length = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().unwrap())
        })
        .unwrap_or(0);
    let mut rest = vec![0; length];
    reader.read_exact(&mut rest).unwrap();

    // Same connection, next request; `Connection: close` ends it after.
    write!(
        writer,
        "GET {} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n{}Connection: close\r\n\r\n",
        target(get_req.uri()),
        proxy.port(),
        extra(&get_req)
    )
    .unwrap();
    let head = read_raw_head(&mut reader);
    assert!(head.starts_with("HTTP/1.1 200"), "{kind}: get: {head:?}");
    let mut got = Vec::new();
    reader.read_to_end(&mut got).unwrap();
    assert_eq!(got.len(), body.len(), "{kind}");
    assert!(got == body, "{kind}: body differs");
    let stats = proxy.stats();
    assert_eq!((stats.requests, stats.forwarded), (2, 2), "{kind}");
}

/// A scripted Truncate cuts one GET's body short (the SDK reports an error or
/// gets fewer bytes); the next GET gets everything.
async fn check_proxy_truncate(server: &S3Server) {
    let kind = server.kind();
    let bucket = server.bucket();
    let data = pattern(100_000);
    put(&server.client(), bucket, "cut/object", &data).await;
    let proxy = FaultProxy::start(&server.endpoint());
    let client = proxied_client(server, &proxy, RetryConfig::disabled());
    proxy.set(Rules {
        seed: 7,
        script: vec![Scripted::once("GET", "/cut/", Fault::Truncate)],
        ..Rules::default()
    });
    // A HEAD matches neither the method nor the fault: untouched.
    client
        .head_object()
        .bucket(bucket)
        .key("cut/object")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{kind}: head: {}", error_text(&e)));
    match client
        .get_object()
        .bucket(bucket)
        .key("cut/object")
        .send()
        .await
    {
        Err(_) => {}
        Ok(out) => match out.body.collect().await {
            Err(_) => {}
            Ok(body) => assert!(
                body.into_bytes().len() < data.len(),
                "{kind}: a truncated body came back whole"
            ),
        },
    }
    assert_eq!(proxy.stats().truncate, 1, "{kind}");
    assert_eq!(get(&client, bucket, "cut/object").await, data, "{kind}");
    assert_eq!(proxy.stats().truncate, 1, "{kind}");
}

/// A scripted LostReply on a PUT: the client sees a transport error, yet the
/// object was written.
async fn check_proxy_lost_reply(server: &S3Server) {
    let kind = server.kind();
    let bucket = server.bucket();
    let proxy = FaultProxy::start(&server.endpoint());
    let client = proxied_client(server, &proxy, RetryConfig::disabled());
    proxy.set(Rules {
        script: vec![Scripted::once("PUT", "/lost/", Fault::LostReply)],
        ..Rules::default()
    });
    let err = client
        .put_object()
        .bucket(bucket)
        .key("lost/object")
        .body(ByteStream::from_static(b"written, reply lost"))
        .send()
        .await
        .expect_err("the reply was lost");
    assert_eq!(http_status(&err), None, "{kind}: {}", error_text(&err));
    let stats = proxy.stats();
    assert_eq!((stats.lost_reply, stats.forwarded), (1, 1), "{kind}");
    assert_eq!(
        get(&server.client(), bucket, "lost/object").await,
        b"written, reply lost",
        "{kind}"
    );
}

/// `down` fails every request with a transport error; default rules make the
/// same client work again.
async fn check_proxy_down(server: &S3Server) {
    let kind = server.kind();
    let bucket = server.bucket();
    let proxy = FaultProxy::start(&server.endpoint());
    let client = proxied_client(server, &proxy, RetryConfig::disabled());
    put(&client, bucket, "down/object", b"before").await;
    proxy.set(Rules {
        down: true,
        // `down` ignores `only`.
        only: Some(("DELETE".into(), "/elsewhere/".into())),
        ..Rules::default()
    });
    let err = client
        .get_object()
        .bucket(bucket)
        .key("down/object")
        .send()
        .await
        .expect_err("the store is down");
    assert_eq!(http_status(&err), None, "{kind}: {}", error_text(&err));
    let err = client
        .put_object()
        .bucket(bucket)
        .key("down/other")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .expect_err("the store is down");
    assert_eq!(http_status(&err), None, "{kind}: {}", error_text(&err));
    let stats = proxy.stats();
    assert_eq!((stats.reset, stats.forwarded), (2, 1), "{kind}: {stats:?}");

    proxy.set(Rules::default());
    assert_eq!(
        get(&client, bucket, "down/object").await,
        b"before",
        "{kind}"
    );
    put(&client, bucket, "down/other", b"after").await;
}

/// The SDK's standard retry rides over one injected 503, 500 and reset; with
/// retries off the 503 is a service error with the S3 code.
async fn check_proxy_retried_errors(server: &S3Server) {
    let kind = server.kind();
    let bucket = server.bucket();
    let proxy = FaultProxy::start(&server.endpoint());
    let client = proxied_client(server, &proxy, three_attempts());
    let data = pattern(200_000);
    proxy.set(Rules {
        script: vec![
            Scripted::once("PUT", "/retry/", Fault::Error503),
            Scripted::once("GET", "/retry/", Fault::Error500),
            Scripted::once("GET", "/retry/", Fault::Reset),
        ],
        ..Rules::default()
    });
    put(&client, bucket, "retry/object", &data).await;
    let stats = proxy.stats();
    assert_eq!(
        (stats.error_503, stats.forwarded),
        (1, 1),
        "{kind}: {stats:?}"
    );
    assert_eq!(get(&client, bucket, "retry/object").await, data, "{kind}");
    let stats = proxy.stats();
    assert_eq!(
        (stats.error_500, stats.reset, stats.forwarded),
        (1, 1, 2),
        "{kind}: {stats:?}"
    );

    let no_retry = proxied_client(server, &proxy, RetryConfig::disabled());
    proxy.set(Rules {
        only: Some(("PUT".into(), "/retry/".into())),
        error_503: 1.0,
        ..Rules::default()
    });
    let err = no_retry
        .put_object()
        .bucket(bucket)
        .key("retry/refused")
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .expect_err("503");
    assert_eq!(http_status(&err), Some(503), "{kind}: {}", error_text(&err));
    assert_eq!(error_code(&err).as_deref(), Some("SlowDown"), "{kind}");
    // `only` spares the rest; the connection survived the 503.
    assert_eq!(get(&no_retry, bucket, "retry/object").await, data, "{kind}");
}

#[tokio::test]
async fn proxy_s3s_fs_passthrough() {
    let server = s3::s3s_fs();
    check_proxy_passthrough(&server).await;
}

#[test]
fn proxy_s3s_fs_expect_continue() {
    let server = s3::s3s_fs();
    check_proxy_expect_continue(&server);
}

#[tokio::test]
async fn proxy_s3s_fs_truncate() {
    let server = s3::s3s_fs();
    check_proxy_truncate(&server).await;
}

#[tokio::test]
async fn proxy_s3s_fs_lost_reply() {
    let server = s3::s3s_fs();
    check_proxy_lost_reply(&server).await;
}

#[tokio::test]
async fn proxy_s3s_fs_down() {
    let server = s3::s3s_fs();
    check_proxy_down(&server).await;
}

#[tokio::test]
async fn proxy_s3s_fs_retried_errors() {
    let server = s3::s3s_fs();
    check_proxy_retried_errors(&server).await;
}

/// All proxy checks on one SeaweedFS (each starts its own proxy and uses its
/// own keys), so the suite starts one weed for them.
#[test]
fn proxy_seaweedfs() {
    let server = s3::seaweedfs(false);
    check_proxy_expect_continue(&server);
    run_async(async {
        check_proxy_passthrough(&server).await;
        check_proxy_truncate(&server).await;
        check_proxy_lost_reply(&server).await;
        check_proxy_down(&server).await;
        check_proxy_retried_errors(&server).await;
    });
}

/// Framing the S3 servers never exercise, against a scripted upstream that
/// records what it receives: a chunked request (with a trailer) is forwarded
/// verbatim, a chunked response relayed verbatim, and a response without
/// length is relayed until the upstream closes.
#[test]
fn proxy_framing_chunked_and_until_close() {
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = upstream.local_addr().unwrap().port();
    let request = "POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
                   5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nx-trailer: t\r\n\r\n";
    let response = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                    3\r\nabc\r\n0\r\n\r\n";
    let second = "GET /until-close HTTP/1.1\r\nHost: x\r\n\r\n";
    let second_response = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end";
    let server = std::thread::spawn(move || {
        let (mut conn, _) = upstream.accept().unwrap();
        let mut got = vec![0; request.len()];
        conn.read_exact(&mut got).unwrap();
        conn.write_all(response.as_bytes()).unwrap();
        let mut got2 = vec![0; second.len()];
        conn.read_exact(&mut got2).unwrap();
        conn.write_all(second_response.as_bytes()).unwrap();
        (
            String::from_utf8(got).unwrap(),
            String::from_utf8(got2).unwrap(),
        )
        // `conn` closes here: the end of the second body.
    });

    let proxy = FaultProxy::start(&format!("http://127.0.0.1:{port}"));
    let mut client = TcpStream::connect(("127.0.0.1", proxy.port())).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    client.write_all(request.as_bytes()).unwrap();
    let mut got = vec![0; response.len()];
    client.read_exact(&mut got).unwrap();
    assert_eq!(String::from_utf8(got).unwrap(), response);
    client.write_all(second.as_bytes()).unwrap();
    let mut rest = String::new();
    client.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, second_response);

    let (seen, seen2) = server.join().unwrap();
    assert_eq!(seen, request);
    assert_eq!(seen2, second);
    let stats = proxy.stats();
    assert_eq!((stats.requests, stats.forwarded), (2, 2));
}
