//! The Release Health page and what it reads beyond the JSON API: `GET /`
//! and its assets from the binary, the event stream of verdict changes, and
//! a release's chart series.

use std::time::{Duration, Instant};

use crate::common::*;
use release_verdict::config::Config;
use release_verdict::otlp_kit::{release_resource, trace_request};

fn quick() -> Config {
    let mut config = Config::default();
    config.judge.tick = Duration::from_millis(100);
    config
}

#[tokio::test]
async fn the_page_and_its_assets_are_served_from_the_binary() {
    let server = TestServer::start().await;
    let page = reqwest::get(server.url("/")).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = page.text().await.unwrap();
    assert!(html.contains("<title>Release Health</title>"), "{html}");
    // Relative links: the page works behind a path prefix too.
    assert!(html.contains(r#"src="assets/page.js""#), "{html}");
    for (path, kind) in [
        ("/assets/page.js", "text/javascript"),
        ("/assets/page.css", "text/css"),
    ] {
        let r = reqwest::get(server.url(path)).await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with(kind));
        // Nothing from outside the daemon.
        let body = r.text().await.unwrap();
        assert!(!body.contains("https://"), "{path} fetches from outside");
    }
}

#[tokio::test]
async fn the_page_and_its_assets_keep_the_browser_to_the_daemons_own_files() {
    let server = TestServer::start().await;
    for path in ["/", "/assets/page.js", "/assets/page.css"] {
        let r = reqwest::get(server.url(path)).await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let h = |name: &str| {
            r.headers()
                .get(name)
                .unwrap_or_else(|| panic!("{path}: no {name}"))
                .to_str()
                .unwrap()
                .to_string()
        };
        let csp = h("content-security-policy");
        let directives: Vec<&str> = csp.split(';').map(str::trim).collect();
        for want in ["default-src 'self'", "frame-ancestors 'none'"] {
            assert!(directives.contains(&want), "{path}: {csp}");
        }
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{path}: {csp}"
        );
        assert_eq!(h("x-frame-options"), "DENY", "{path}");
        assert_eq!(h("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(h("referrer-policy"), "no-referrer", "{path}");
    }
    // The policy allows no inline script or style: the page has none.
    let html = reqwest::get(server.url("/"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !html.contains("<script>") && !html.contains("<style"),
        "{html}"
    );
    assert!(!html.contains("style="), "{html}");
    let handler = html
        .split_whitespace()
        .find(|w| w.starts_with("on") && w.contains('='));
    assert_eq!(handler, None, "an inline event handler");
}

#[tokio::test]
async fn the_page_is_open_and_the_data_it_reads_asks_for_a_read_token() {
    let dir = std::env::temp_dir().join(format!("rv-page-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tokens = dir.join("read.tokens");
    std::fs::write(&tokens, "s3cret\n").unwrap();
    let mut config = Config::default();
    config.auth.read_tokens_file = tokens.to_string_lossy().into_owned();
    let server = TestServer::with_config(config).await;
    let status = |path: &str, token: Option<&str>| {
        let mut req = reqwest::Client::new().get(server.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status("/", None).await, 200);
    assert_eq!(status("/assets/page.js", None).await, 200);
    assert_eq!(status("/api/v1/releases", None).await, 401);
    assert_eq!(status("/api/v1/releases/stream", None).await, 401);
    assert_eq!(status("/api/v1/releases", Some("s3cret")).await, 200);
    let _ = std::fs::remove_dir_all(dir);
}

/// Reads the stream until `want` appears in it, or panics with what came.
async fn read_until(resp: &mut reqwest::Response, seen: &mut String, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !seen.contains(want) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, resp.chunk()).await {
            Ok(Ok(Some(bytes))) => seen.push_str(&String::from_utf8_lossy(&bytes)),
            other => panic!("no {want:?} on the stream ({other:?}); got:\n{seen}"),
        }
    }
}

#[tokio::test]
async fn the_stream_sends_the_current_list_then_each_verdict_change() {
    let server = TestServer::with_config(quick()).await;
    let mut client = server.trace_client().await;
    let stable = release_resource("checkout", "prod", "checkout-1a2b3c4", "1a2b3c4");
    client
        .export(trace_request(stable.clone(), 100, 0))
        .await
        .unwrap();
    server
        .wait_for_release("checkout-1a2b3c4", |v| v["canary"]["requests"] == 100)
        .await;

    let mut stream = reqwest::Client::new()
        .get(server.url("/api/v1/releases/stream"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert!(stream.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut seen = String::new();
    read_until(&mut stream, &mut seen, "event: snapshot").await;
    read_until(&mut stream, &mut seen, "checkout-1a2b3c4").await;

    // A canary appears: its first verdict is a change, sent as it happens.
    let canary = release_resource("checkout", "prod", "checkout-2b5d9af", "2b5d9af");
    client.export(trace_request(canary, 50, 2)).await.unwrap();
    // (Field order is the verdict object's: service, environment, id.)
    let want = r#"event: verdict
data: {"service":"checkout","environment":"prod","deployment_id":"checkout-2b5d9af""#;
    read_until(&mut stream, &mut seen, want).await;
    let at = seen.find(want).unwrap();
    // The whole event: up to its blank line.
    while !seen[at..].contains("\n\n") {
        let more = tokio::time::timeout(Duration::from_secs(5), stream.chunk()).await;
        seen.push_str(&String::from_utf8_lossy(&more.unwrap().unwrap().unwrap()));
    }
    let data = seen[at..]
        .lines()
        .nth(1)
        .and_then(|l| l.strip_prefix("data: "))
        .expect("a data line");
    let v: serde_json::Value = serde_json::from_str(data).unwrap();
    assert!(
        v["verdict"].is_string() && v["reason"].is_string(),
        "{data}"
    );

    // Its chart series has begun, from the checks just reported.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = server
            .get_json("/api/v1/releases/checkout-2b5d9af/series?service=checkout&environment=prod")
            .await;
        if status == 200 && !body["points"].as_array().unwrap().is_empty() {
            let p = &body["points"][0];
            assert!(p["t"].as_u64().unwrap() > 0, "{body}");
            assert!(
                p["canary"].is_object() && p["baseline"].is_object(),
                "{body}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no series: {status} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _) = server.get_json("/api/v1/releases/nope/series").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_release_called_stream_is_still_found() {
    let server = TestServer::with_config(quick()).await;
    let mut client = server.trace_client().await;
    client
        .export(trace_request(
            release_resource("odd", "prod", "stream", "abc1234"),
            10,
            0,
        ))
        .await
        .unwrap();
    let v = server
        .wait_for_release("stream", |v| v["canary"]["requests"] == 10)
        .await;
    assert_eq!(v["service"], "odd");
}
