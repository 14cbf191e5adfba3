//! The puller against a fault-injecting registry: a small distribution-API
//! server on loopback (plain HTTP, `plain-http = true`) that can demand a
//! bearer token, answer 503 a number of times, delay blobs, serve a blob
//! longer than declared, and counts what it was asked. It checks what a
//! real registry cannot be made to do on cue: retries with backoff on
//! transient errors only, the bound on concurrent downloads, bearer auth,
//! and a lying blob refused with nothing recorded.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use nodeagent::config::RegistryConfig;
use nodeagent::images::pull::{PullError, PullRef, Puller, RetryPolicy};
use nodeagent::images::{ImageRef, ImageStore};
use oci::Digest;
use oci::media::{OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST};
use serde_json::json;

mod common;
use common::oci_image::file_tar;

#[derive(Default)]
struct Faults {
    /// Required `Authorization: Bearer` token, if any.
    token: Option<String>,
    /// 503 answers left per blob digest.
    unavailable: BTreeMap<String, usize>,
    /// Blobs answered with extra bytes.
    longer: Vec<String>,
    /// How long every blob answer waits.
    delay: Duration,
}

#[derive(Default)]
struct Fake {
    blobs: BTreeMap<String, Vec<u8>>,
    manifests: BTreeMap<String, Vec<u8>>,
    faults: Mutex<Faults>,
    requests: Mutex<BTreeMap<String, usize>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

fn status(code: StatusCode) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"errors":[{"code":"UNKNOWN","message":"injected"}]}"#,
    )
        .into_response()
}

async fn v2_root(State(fake): State<Arc<Fake>>, headers: HeaderMap) -> Response {
    answer(&fake, &headers, String::new()).await
}

async fn v2(
    State(fake): State<Arc<Fake>>,
    headers: HeaderMap,
    Path(rest): Path<String>,
) -> Response {
    answer(&fake, &headers, rest).await
}

async fn answer(fake: &Fake, headers: &HeaderMap, rest: String) -> Response {
    let wanted = fake.faults.lock().unwrap().token.clone();
    if let Some(token) = wanted {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(token.as_str()) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer realm=\"none\"")],
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"token"}]}"#,
            )
                .into_response();
        }
    }
    if rest.is_empty() {
        return StatusCode::OK.into_response();
    }
    *fake
        .requests
        .lock()
        .unwrap()
        .entry(rest.clone())
        .or_default() += 1;
    if let Some((_, reference)) = rest.split_once("/manifests/") {
        return match fake.manifests.get(reference) {
            Some(bytes) => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, OCI_MANIFEST)],
                bytes.clone(),
            )
                .into_response(),
            None => (
                StatusCode::NOT_FOUND,
                r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"no"}]}"#,
            )
                .into_response(),
        };
    }
    let Some((_, digest)) = rest.split_once("/blobs/") else {
        return status(StatusCode::NOT_FOUND);
    };
    let now = fake.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    fake.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let (delay, unavailable, longer) = {
        let mut faults = fake.faults.lock().unwrap();
        let left = faults.unavailable.get_mut(digest);
        let unavailable = match left {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        };
        (
            faults.delay,
            unavailable,
            faults.longer.iter().any(|d| d == digest),
        )
    };
    tokio::time::sleep(delay).await;
    fake.in_flight.fetch_sub(1, Ordering::SeqCst);
    if unavailable {
        return status(StatusCode::SERVICE_UNAVAILABLE);
    }
    match fake.blobs.get(digest) {
        Some(bytes) => {
            let mut body = bytes.clone();
            if longer {
                body.extend_from_slice(b"trailing bytes the descriptor did not declare");
            }
            (StatusCode::OK, body).into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            r#"{"errors":[{"code":"BLOB_UNKNOWN","message":"no"}]}"#,
        )
            .into_response(),
    }
}

/// An image of `layers` gzip layers under tag `1`; returns the fake and
/// the layer digests.
fn fake_with_image(layers: u8) -> (Fake, Vec<String>) {
    let mut fake = Fake::default();
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    let mut digests = Vec::new();
    for i in 0..layers {
        let data = vec![i; 100_000];
        let tar = file_tar(&format!("f{i}"), 0o644, &data);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let blob = gz.finish().unwrap();
        let digest = Digest::of(&blob).to_string();
        descs.push(json!({"mediaType": OCI_LAYER_GZIP, "digest": digest, "size": blob.len()}));
        diff_ids.push(Digest::of(&tar).to_string());
        digests.push(digest.clone());
        fake.blobs.insert(digest, blob);
    }
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let config_digest = Digest::of(&config).to_string();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len()},
        "layers": descs,
    }))
    .unwrap();
    fake.blobs.insert(config_digest, config);
    fake.manifests.insert("1".to_owned(), manifest);
    (fake, digests)
}

struct Running {
    fake: Arc<Fake>,
    host: String,
    _server: tokio::task::JoinHandle<()>,
}

async fn serve(fake: Fake) -> Running {
    let fake = Arc::new(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let router = Router::new()
        .route("/v2/", get(v2_root))
        .route("/v2/{*rest}", get(v2))
        .with_state(Arc::clone(&fake));
    let server = tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    Running {
        fake,
        host,
        _server: server,
    }
}

fn registries(host: &str, token: Option<&str>) -> Vec<RegistryConfig> {
    let auth = token
        .map(|t| format!("auth = {{ token = \"{t}\" }}\n"))
        .unwrap_or_default();
    let text = format!("[[registries]]\nhost = \"{host}\"\nplain-http = true\n{auth}");
    nodeagent::config::parse(text.as_bytes(), &nodeagent::config::ConfigOrigin::Default)
        .unwrap()
        .registries
}

fn quick() -> RetryPolicy {
    RetryPolicy {
        attempts: 3,
        base: Duration::from_millis(20),
        cap: Duration::from_millis(80),
    }
}

async fn pull(
    store: &Arc<ImageStore>,
    registries: Vec<RegistryConfig>,
    reference: &str,
) -> Result<Digest, PullError> {
    let puller = Puller::new(Arc::clone(store), registries).with_policy(quick());
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let reference: PullRef = reference.parse().unwrap();
    let result = puller.pull(&reference, &tx).await;
    drop(tx);
    drain.await.unwrap();
    result.map(|p| p.digest)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn transient_failures_are_retried_and_downloads_stay_bounded() {
    runtime().block_on(async {
        let (fake, layers) = fake_with_image(6);
        {
            let mut faults = fake.faults.lock().unwrap();
            faults.unavailable.insert(layers[0].clone(), 2);
            faults.delay = Duration::from_millis(100);
            faults.token = Some("site-token".to_owned());
        }
        let running = serve(fake).await;
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(ImageStore::open(dir.path()).unwrap());
        let reference = format!("{}/team/app:1", running.host);

        let refused = pull(&store, registries(&running.host, Some("wrong")), &reference).await;
        assert!(
            matches!(refused, Err(PullError::AuthFailed { .. })),
            "{refused:?}"
        );

        let digest = pull(
            &store,
            registries(&running.host, Some("site-token")),
            &reference,
        )
        .await
        .unwrap();
        let requests = running.fake.requests.lock().unwrap().clone();
        let asked = |digest: &str| requests.get(&format!("team/app/blobs/{digest}")).copied();
        assert_eq!(asked(&layers[0]), Some(3), "two 503s, then the blob");
        assert_eq!(asked(&layers[1]), Some(1));
        let max = running.fake.max_in_flight.load(Ordering::SeqCst);
        assert!(
            (2..=3).contains(&max),
            "{max} blobs were fetched at once (bound 3)"
        );
        assert!(store.resolve(&ImageRef::Digest(digest)).is_some());
    });
}

#[test]
fn a_missing_blob_is_not_retried_and_a_long_one_is_refused_with_nothing_recorded() {
    runtime().block_on(async {
        let (mut fake, layers) = fake_with_image(2);
        fake.blobs.remove(&layers[0]);
        fake.faults.lock().unwrap().longer.push(layers[1].clone());
        let running = serve(fake).await;
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(ImageStore::open(dir.path()).unwrap());
        let reference = format!("{}/team/app:1", running.host);

        let failed = pull(&store, registries(&running.host, None), &reference).await;
        let requests = running.fake.requests.lock().unwrap().clone();
        assert_eq!(
            requests.get(&format!("team/app/blobs/{}", layers[0])),
            Some(&1),
            "a 404 is never retried"
        );
        // The long blob makes the image invalid; that verdict wins over
        // the missing one.
        match failed {
            Err(e @ PullError::Invalid { .. }) => {
                assert!(e.to_string().contains(&layers[1]), "{e}");
            }
            other => panic!("expected an invalid image, got {other:?}"),
        }
        assert!(store.list().is_empty(), "nothing is recorded");
        let hex = layers[1].strip_prefix("sha256:").unwrap();
        assert!(!dir.path().join("blobs/sha256").join(hex).exists());
    });
}
