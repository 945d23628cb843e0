//! `release-verdict event`: posts one ledger event from a pipeline or a
//! controller, and says with its exit code what became of it (as `gate`
//! does): 0 recorded (or already recorded, by its `event_id`), 3 the daemon
//! could not be reached or failed, 64 the event was refused as bad input.

use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::exit;

/// The event is recorded (or was already, by its `event_id`).
const RECORDED: u8 = 0;

/// What to post.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// The daemon's HTTP address (the OTLP/HTTP port, 4318 by default).
    #[arg(long, env = "RELEASE_VERDICT_SERVER")]
    pub server: String,
    /// The event's type: deploy_started, promoted, rolled_back, commit,
    /// pr_merged, incident_started, incident_resolved, slo_restored, or any
    /// lowercase type.
    #[arg(long = "type")]
    pub kind: String,
    #[arg(long)]
    pub service: String,
    #[arg(long)]
    pub environment: Option<String>,
    #[arg(long)]
    pub deployment_id: Option<String>,
    #[arg(long)]
    pub git_sha: Option<String>,
    /// When it happened (RFC 3339); now by default.
    #[arg(long)]
    pub ts: Option<String>,
    /// Makes the post idempotent: a retried step records it once.
    #[arg(long)]
    pub event_id: Option<String>,
    /// Metadata entries, KEY=VALUE, repeatable.
    #[arg(long = "meta", value_parser = key_value)]
    pub metadata: Vec<(String, String)>,
    /// A write token, when the daemon asks for one ([auth] write_tokens_file).
    #[arg(long, env = "RELEASE_VERDICT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// CA certificates (PEM) to trust for an https:// server with a
    /// private CA ([server.tls]).
    #[arg(long, env = "RELEASE_VERDICT_CA_FILE")]
    pub ca_file: Option<std::path::PathBuf>,
}

fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

/// The JSON body of the post.
pub fn body(o: &Options) -> Value {
    let mut e = Map::new();
    e.insert("type".into(), json!(o.kind));
    e.insert("service".into(), json!(o.service));
    for (key, value) in [
        ("environment", &o.environment),
        ("deployment_id", &o.deployment_id),
        ("git_sha", &o.git_sha),
        ("ts", &o.ts),
        ("event_id", &o.event_id),
    ] {
        if let Some(v) = value {
            e.insert(key.into(), json!(v));
        }
    }
    if !o.metadata.is_empty() {
        let meta: Map<String, Value> = o
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        e.insert("metadata".into(), Value::Object(meta));
    }
    Value::Object(e)
}

/// Posts the event; prints what happened; returns the exit code.
pub fn main(o: &Options) -> u8 {
    let url = format!("{}/api/v1/events", o.server.trim_end_matches('/'));
    let builder = match release_verdict::client::http(o.token.as_deref(), o.ca_file.as_deref()) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("release-verdict event: {e}");
            return exit::USAGE;
        }
    };
    let post = async {
        let client = builder.timeout(Duration::from_secs(30)).build()?;
        let r = client.post(&url).json(&body(o)).send().await?;
        let status = r.status();
        let text = r.text().await?;
        Ok::<_, reqwest::Error>((status, text))
    };
    let answer = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt.block_on(post),
        Err(e) => {
            eprintln!("release-verdict event: {e}");
            return exit::UNAVAILABLE;
        }
    };
    match answer {
        Ok((status, text)) if status.is_success() => {
            let result = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["results"][0]["status"].as_str().map(str::to_string))
                .unwrap_or_else(|| "recorded".into());
            println!("{}: {result}", o.kind);
            RECORDED
        }
        Ok((status, text)) if status.is_client_error() => {
            eprintln!("release-verdict event: refused ({status}): {text}");
            exit::USAGE
        }
        Ok((status, text)) => {
            eprintln!("release-verdict event: {url}: {status}: {text}");
            exit::UNAVAILABLE
        }
        Err(e) => {
            eprintln!("release-verdict event: {url}: {e}");
            exit::UNAVAILABLE
        }
    }
}
