//! TLS on the HTTP port over real sockets: HTTPS with the server's
//! certificate, mutual TLS, and certificates replaced on disk while the
//! daemon runs (the gRPC port is exercised by the Python SDK's exporter in
//! tests/python/test_tls.py).

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::{post_protobuf, TestServer};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use release_verdict::config::Config;
use release_verdict::otlp_kit::{release_resource, trace_request};

/// A CA that signs server and client certificates.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Ca {
            pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// (certificate, key) PEM for `names`, for a server or a client.
    fn sign(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn server(&self) -> (String, String) {
        self.sign(
            &["127.0.0.1", "localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    fn client(&self) -> (String, String) {
        self.sign(&["exporter"], ExtendedKeyUsagePurpose::ClientAuth)
    }
}

/// Writes a file through a temporary name and a rename, as cert-manager
/// and friends do, so the daemon never reads half a file.
fn put(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn tls_config(dir: &Path, server: &(String, String), client_ca: Option<&Ca>) -> Config {
    let (cert, key) = (dir.join("server.pem"), dir.join("server.key"));
    put(&cert, &server.0);
    put(&key, &server.1);
    let mut config = Config::default();
    config.server.tls.cert_file = cert.display().to_string();
    config.server.tls.key_file = key.display().to_string();
    if let Some(ca) = client_ca {
        let path = dir.join("clients.pem");
        put(&path, &ca.pem);
        config.server.tls.client_ca_file = path.display().to_string();
    }
    config.server.tls.reload_interval = Duration::from_millis(100);
    config
}

/// A client that trusts only `ca`, optionally presenting an identity.
fn client(ca: &Ca, identity: Option<&(String, String)>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap())
        // Every request its own connection, hence its own handshake: a
        // kept-alive one would go on with the certificate it began with.
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10));
    if let Some((cert, key)) = identity {
        let pem = format!("{cert}{key}");
        b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
    }
    b.build().unwrap()
}

fn https(server: &TestServer, path: &str) -> String {
    format!("https://127.0.0.1:{}{path}", server.http.port())
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("rv-tls-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Polls `f` until it is true or 10 s pass.
async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f().await {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn https_serves_otlp_and_the_api_and_refuses_plain_http() {
    let dir = tempdir("https");
    let ca = Ca::new("test CA");
    let server = TestServer::with_tls(tls_config(&dir, &ca.server(), None)).await;
    let c = client(&ca, None);

    let req = trace_request(
        release_resource("shop", "prod", "shop-2b5d9af", "2b5d9af"),
        30,
        3, // every third fails
    );
    let resp = post_protobuf(&c, &https(&server, "/v1/traces"), &req).await;
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = c
        .get(https(&server, "/api/v1/releases/shop-2b5d9af"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["canary"]["requests"], 30, "{v}");
    assert_eq!(v["canary"]["errors"], 10, "{v}");

    // Plain HTTP to the TLS port gets no answer; the port goes on serving.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/healthz", server.http.port()))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP was answered: {plain:?}");
    // A client that trusts another CA refuses the server.
    let stranger = client(&Ca::new("another CA"), None)
        .get(https(&server, "/healthz"))
        .send()
        .await;
    assert!(stranger.is_err());
    let ok = c.get(https(&server, "/healthz")).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn mutual_tls_takes_only_clients_the_ca_signed() {
    let dir = tempdir("mtls");
    let ca = Ca::new("server CA");
    let clients = Ca::new("client CA");
    let server = TestServer::with_tls(tls_config(&dir, &ca.server(), Some(&clients))).await;

    let anonymous = client(&ca, None)
        .get(https(&server, "/healthz"))
        .send()
        .await;
    assert!(anonymous.is_err(), "a client without a certificate got in");
    let forged = client(&ca, Some(&Ca::new("someone else").client()))
        .get(https(&server, "/healthz"))
        .send()
        .await;
    assert!(forged.is_err(), "a certificate of another CA got in");
    let trusted = client(&ca, Some(&clients.client()))
        .get(https(&server, "/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(trusted.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn a_renewed_certificate_is_served_without_a_restart_and_a_broken_one_is_not() {
    let dir = tempdir("reload");
    let old_ca = Ca::new("old CA");
    let new_ca = Ca::new("new CA");
    let config = tls_config(&dir, &old_ca.server(), None);
    let (cert_file, key_file) = (
        std::path::PathBuf::from(&config.server.tls.cert_file),
        std::path::PathBuf::from(&config.server.tls.key_file),
    );
    let server = TestServer::with_tls(config).await;
    let (old, new) = (client(&old_ca, None), client(&new_ca, None));
    let answers = |c: reqwest::Client, url: String| async move { c.get(url).send().await.is_ok() };
    assert!(answers(old.clone(), https(&server, "/healthz")).await);
    assert!(!answers(new.clone(), https(&server, "/healthz")).await);

    // Renewed on disk (key first, as a rotation would): new connections
    // get the new certificate.
    let renewed = new_ca.server();
    put(&key_file, &renewed.1);
    put(&cert_file, &renewed.0);
    eventually("the renewed certificate is served", || {
        answers(new.clone(), https(&server, "/healthz"))
    })
    .await;
    assert!(!answers(old.clone(), https(&server, "/healthz")).await);

    // A broken file is refused: the renewed certificate stays in force,
    // and the failed reload is counted.
    put(&cert_file, "-----BEGIN CERTIFICATE-----\nnot base64\n");
    eventually("the failed reload is counted", || {
        let c = new.clone();
        let url = https(&server, "/metrics");
        async move {
            let Ok(r) = c.get(url).send().await else {
                return false;
            };
            let text = r.text().await.unwrap_or_default();
            text.contains(r#"release_verdict_tls_reloads_total{result="error"} 1"#)
        }
    })
    .await;
    assert!(answers(new.clone(), https(&server, "/healthz")).await);
    server.stop().await;
}

#[tokio::test]
async fn missing_or_broken_files_stop_the_start_with_the_reason() {
    let dir = tempdir("broken");
    let mut config = Config::default();
    config.ledger.path = ":memory:".into();
    config.server.grpc_listen = "127.0.0.1:0".parse().unwrap();
    config.server.http_listen = "127.0.0.1:0".parse().unwrap();
    config.server.tls.cert_file = dir.join("absent.pem").display().to_string();
    config.server.tls.key_file = dir.join("absent.key").display().to_string();
    let e = release_verdict::server::Server::bind(config.clone())
        .await
        .err()
        .expect("a missing certificate is an error");
    assert!(
        e.to_string().contains("server.tls.cert_file") && e.to_string().contains("absent.pem"),
        "{e}"
    );

    let ca = Ca::new("test CA");
    let (cert, _) = ca.server();
    let (_, other_key) = ca.server();
    put(&dir.join("absent.pem"), &cert);
    put(&dir.join("absent.key"), &other_key);
    let e = release_verdict::server::Server::bind(config)
        .await
        .err()
        .expect("a key that is not the certificate's is an error");
    assert!(e.to_string().contains("server.tls"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_event_command_trusts_the_ca_it_is_given() {
    let dir = tempdir("event");
    let ca = Ca::new("private CA");
    let server = TestServer::with_tls(tls_config(&dir, &ca.server(), None)).await;
    let ca_file = dir.join("ca.pem");
    put(&ca_file, &ca.pem);
    let url = https(&server, "");
    let event = |extra: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_release-verdict"))
            .args(["event", "--server", &url, "--type", "deploy_started"])
            .args([
                "--service",
                "checkout",
                "--deployment-id",
                "checkout-2b5d9af",
            ])
            .args(extra)
            .env_remove("RELEASE_VERDICT_CA_FILE")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code(), text)
    };
    let (code, text) = tokio::task::block_in_place(|| event(&[]));
    assert_eq!(code, Some(3), "an unknown CA is not trusted: {text}");
    let ca_arg = ca_file.display().to_string();
    let (code, text) = tokio::task::block_in_place(|| event(&["--ca-file", &ca_arg]));
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("inserted"), "{text}");
    let (code, text) = tokio::task::block_in_place(|| event(&["--ca-file", "/nonexistent.pem"]));
    assert_eq!(code, Some(64), "{text}");
    assert!(text.contains("/nonexistent.pem"), "{text}");
    server.stop().await;
}
