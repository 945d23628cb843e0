//! `release-verdict gate`: waits on the JSON API until a release is green or
//! red, for a CI step. A pure decision over each answer, inside a polling
//! loop; at the end, the release's story as `status ID` tells it.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use release_verdict::Color;
use reqwest::{StatusCode, Url};
use serde::Deserialize;

use crate::exit;
use crate::status;

/// The exit codes, for `--help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  green: promote
  1  red: roll back
  2  still yellow when --timeout passed (undecided); the last reason is printed
  3  no verdict before --timeout: the server was unreachable, answered errors,
     or did not know the release (404); the last problem is printed
  4  the deployment id names releases in several services or environments:
     narrow with --service / --environment (the matches are listed); at once
  64 the --server URL, or the command line, is unusable

Example (a CI step):
  release-verdict gate --server http://release-verdict:4318 \\
      --deployment-id \"$DEPLOYMENT_ID\" --environment prod --timeout 10m";

/// The part of the verdict object the gate reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub service: String,
    pub environment: String,
    pub deployment_id: String,
    pub verdict: Color,
    pub reason: String,
}

/// One of the releases an ambiguous id names.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Candidate {
    pub service: String,
    pub environment: String,
}

/// What one poll of `GET /api/v1/releases/{id}` answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// 200 with a verdict object.
    Verdict(Seen),
    /// 404: the daemon does not track the release (yet).
    Unknown(String),
    /// 409: the id is tracked in several (service, environment)s.
    Ambiguous(Vec<Candidate>),
    /// No usable answer: connection refused, timed out, 5xx, not JSON.
    Unreachable(String),
}

impl Answer {
    /// A progress line while waiting, and the key that changes only when
    /// the news does: the color and the reason's gist (the text before its
    /// first colon, so "insufficient data" is printed once, not its counts).
    pub fn progress(&self) -> (String, String) {
        match self {
            Answer::Verdict(s) => {
                let gist = s.reason.split(':').next().unwrap_or_default();
                let color = s.verdict.as_str();
                (
                    format!("{color} {gist}"),
                    format!("gate: {color}: {}", s.reason),
                )
            }
            Answer::Unknown(p) | Answer::Unreachable(p) => {
                (p.clone(), format!("gate: waiting: {p}"))
            }
            Answer::Ambiguous(_) => (String::new(), String::new()),
        }
    }
}

/// How the gate ends.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Green(Seen),
    Red(Seen),
    /// Yellow at the timeout; the last problem, when the last poll failed.
    Undecided(Seen, Option<String>),
    /// Never a verdict before the timeout: the last problem.
    Unavailable(String),
    Ambiguous(Vec<Candidate>),
}

impl Decision {
    pub fn exit_code(&self) -> u8 {
        match self {
            Decision::Green(_) => exit::GREEN,
            Decision::Red(_) => exit::RED,
            Decision::Undecided(..) => exit::UNDECIDED,
            Decision::Unavailable(_) => exit::UNAVAILABLE,
            Decision::Ambiguous(_) => exit::AMBIGUOUS,
        }
    }

    /// The line printed when the gate ends, for a person reading CI logs.
    pub fn message(&self, id: &str, timeout: Duration) -> String {
        let waited = humantime::format_duration(timeout);
        match self {
            Decision::Green(s) => format!("green: {}: {}", release(s), s.reason),
            Decision::Red(s) => format!("red: {}: {}", release(s), s.reason),
            Decision::Undecided(s, problem) => {
                let mut m = format!(
                    "undecided: {} still yellow after {waited}: {}",
                    release(s),
                    s.reason
                );
                if let Some(p) = problem {
                    m.push_str(&format!(" (last poll failed: {p})"));
                }
                m
            }
            Decision::Unavailable(problem) => {
                format!("unavailable: no verdict for {id:?} within {waited}: {problem}")
            }
            Decision::Ambiguous(matches) => {
                let list: Vec<String> = matches
                    .iter()
                    .map(|c| {
                        format!(
                            "--service {:?} --environment {:?}",
                            c.service, c.environment
                        )
                    })
                    .collect();
                format!(
                    "ambiguous: deployment id {id:?} names {} releases; narrow with one of: {}",
                    matches.len(),
                    list.join("; ")
                )
            }
        }
    }
}

fn release(s: &Seen) -> String {
    format!("{} ({}/{})", s.deployment_id, s.service, s.environment)
}

/// The gate's memory across polls: the last verdict seen, if any.
#[derive(Debug, Default)]
pub struct Gate {
    last: Option<Seen>,
}

impl Gate {
    /// Decides on one answer. `timed_out`: the timeout has passed, so this
    /// was the last poll. `None`: keep polling.
    ///
    /// Green and red end the wait at once, as does an ambiguous id (waiting
    /// cannot resolve it). At the timeout a release seen yellow is undecided,
    /// even if the server stopped answering since; one never seen is
    /// unavailable.
    pub fn observe(&mut self, answer: Answer, timed_out: bool) -> Option<Decision> {
        let problem = match answer {
            Answer::Verdict(seen) => match seen.verdict {
                Color::Green => return Some(Decision::Green(seen)),
                Color::Red => return Some(Decision::Red(seen)),
                Color::Yellow => {
                    self.last = Some(seen);
                    None
                }
            },
            Answer::Ambiguous(matches) => return Some(Decision::Ambiguous(matches)),
            Answer::Unknown(p) | Answer::Unreachable(p) => Some(p),
        };
        if !timed_out {
            return None;
        }
        Some(match self.last.take() {
            Some(seen) => Decision::Undecided(seen, problem),
            None => Decision::Unavailable(problem.unwrap_or_default()),
        })
    }
}

/// The verdict object as JSON, read leniently: only what the gate needs.
#[derive(Deserialize)]
struct VerdictBody {
    service: String,
    environment: String,
    deployment_id: String,
    verdict: String,
    #[serde(default)]
    reason: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error: String,
    #[serde(default)]
    matches: Vec<Candidate>,
}

/// Classifies an HTTP answer (status and body) of the verdict endpoint.
pub fn classify(status: StatusCode, body: &[u8]) -> Answer {
    match status {
        StatusCode::OK => match serde_json::from_slice::<VerdictBody>(body) {
            Ok(v) => {
                let verdict = match v.verdict.parse::<Color>() {
                    Ok(c) => c,
                    Err(_) => {
                        return Answer::Unreachable(format!("unexpected verdict {:?}", v.verdict));
                    }
                };
                Answer::Verdict(Seen {
                    service: v.service,
                    environment: v.environment,
                    deployment_id: v.deployment_id,
                    verdict,
                    reason: v.reason,
                })
            }
            Err(e) => Answer::Unreachable(format!("not a verdict object: {e}")),
        },
        StatusCode::NOT_FOUND => Answer::Unknown(
            serde_json::from_slice::<ErrorBody>(body)
                .ok()
                .filter(|b| !b.error.is_empty())
                .map(|b| b.error)
                .unwrap_or_else(|| "404 Not Found: is --server the daemon's HTTP port?".into()),
        ),
        StatusCode::CONFLICT => match serde_json::from_slice::<ErrorBody>(body) {
            Ok(b) if !b.matches.is_empty() => Answer::Ambiguous(b.matches),
            _ => Answer::Unreachable("409 without a list of matches".into()),
        },
        other => Answer::Unreachable(
            match serde_json::from_slice::<ErrorBody>(body)
                .ok()
                .filter(|b| !b.error.is_empty())
            {
                Some(b) => format!("the server answered {other}: {}", b.error),
                None => format!("the server answered {other}"),
            },
        ),
    }
}

pub use release_verdict::client::UrlError;

/// `{server}/api/v1/releases/{id}?service=&environment=`, the id
/// percent-encoded as one path segment; a path prefix on `server` is kept.
pub fn verdict_url(
    server: &str,
    id: &str,
    service: Option<&str>,
    environment: Option<&str>,
) -> Result<Url, UrlError> {
    let mut query = Vec::new();
    if let Some(s) = service {
        query.push(("service", s));
    }
    if let Some(e) = environment {
        query.push(("environment", e));
    }
    release_verdict::client::api_url(server, &["api", "v1", "releases", id], &query)
}

/// What to wait on and how.
pub struct Options {
    pub url: Url,
    pub deployment_id: String,
    pub timeout: Duration,
    pub interval: Duration,
    /// A read token, when the daemon asks for one.
    pub token: Option<String>,
    /// CA certificates to trust, for a daemon with a private CA.
    pub ca_file: Option<std::path::PathBuf>,
}

/// The command line: the daemon, the release, how long to wait.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The daemon's HTTP address (the OTLP/HTTP port, 4318 by default):
    /// http:// or https://, with an optional path prefix.
    #[arg(long, env = "RELEASE_VERDICT_SERVER")]
    server: String,
    /// The release to wait on (its `deployment.id`).
    #[arg(long)]
    deployment_id: String,
    /// Narrows the lookup when the id is tracked in several services.
    #[arg(long)]
    service: Option<String>,
    /// Narrows the lookup when the id is tracked in several environments.
    #[arg(long)]
    environment: Option<String>,
    /// Give up after this long, e.g. "10m" or "90s".
    #[arg(long, value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Time between polls.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    interval: Duration,
    /// A read token, when the daemon asks for one ([auth] read_tokens_file).
    #[arg(long, env = "RELEASE_VERDICT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// CA certificates (PEM) to trust for an https:// server with a
    /// private CA ([server.tls]).
    #[arg(long, env = "RELEASE_VERDICT_CA_FILE")]
    ca_file: Option<std::path::PathBuf>,
}

/// The `gate` command: the verdict URL from the command line, then the wait.
pub fn main(args: Args) -> ExitCode {
    let url = verdict_url(
        &args.server,
        &args.deployment_id,
        args.service.as_deref(),
        args.environment.as_deref(),
    );
    match url {
        Ok(url) => ExitCode::from(wait(Options {
            url,
            deployment_id: args.deployment_id,
            timeout: args.timeout,
            interval: args.interval,
            token: args.token,
            ca_file: args.ca_file,
        })),
        Err(e) => {
            eprintln!("release-verdict gate: {e}");
            ExitCode::from(exit::USAGE)
        }
    }
}

/// Waits, prints the outcome (stdout for a verdict, stderr for a problem)
/// and returns the exit code.
pub fn wait(opts: Options) -> u8 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("release-verdict gate: cannot start: {e}");
            return exit::UNAVAILABLE;
        }
    };
    let (outcome, last) = runtime.block_on(run(&opts));
    let message = outcome.message(&opts.deployment_id, opts.timeout);
    match outcome {
        Decision::Green(_) | Decision::Red(_) | Decision::Undecided(..) => {
            println!("{message}");
            // The release's story for the CI log, as `status ID` tells it;
            // stdout keeps the one line scripts read.
            if let Some(release) = last {
                let paint = status::Paint::for_terminal(std::io::stderr().is_terminal());
                eprint!(
                    "\n{}",
                    status::render_release(&release, std::time::SystemTime::now(), paint)
                );
            }
        }
        Decision::Unavailable(_) | Decision::Ambiguous(_) => eprintln!("{message}"),
    }
    outcome.exit_code()
}

/// A slow or silent server must not hold one poll past this.
const MAX_REQUEST_TIME: Duration = Duration::from_secs(10);
/// `--interval 0s` must not spin.
const MIN_INTERVAL: Duration = Duration::from_millis(50);

/// Polls until the gate decides, with the last verdict object seen.
/// Progress (each change of color or problem) goes to stderr.
pub async fn run(opts: &Options) -> (Decision, Option<status::Release>) {
    let deadline = Instant::now() + opts.timeout;
    let client = match release_verdict::client::http(opts.token.as_deref(), opts.ca_file.as_deref())
        .map(|b| b.build())
    {
        Ok(Ok(client)) => client,
        Ok(Err(e)) => return (Decision::Unavailable(e.to_string()), None),
        Err(e) => return (Decision::Unavailable(e), None),
    };
    let mut gate = Gate::default();
    let mut last_key = String::new();
    let mut last = None;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let request_time = remaining.clamp(Duration::from_millis(200), MAX_REQUEST_TIME);
        let (answer, release) = fetch(&client, &opts.url, request_time).await;
        last = release.or(last);
        let (key, line) = answer.progress();
        let now = Instant::now();
        if let Some(outcome) = gate.observe(answer, now >= deadline) {
            return (outcome, last);
        }
        if key != last_key {
            eprintln!("{line}");
            last_key = key;
        }
        let pause = opts.interval.max(MIN_INTERVAL).min(deadline - now);
        tokio::time::sleep(pause).await;
    }
}

/// One poll: the answer, and the verdict object when there is one.
async fn fetch(
    client: &reqwest::Client,
    url: &Url,
    timeout: Duration,
) -> (Answer, Option<status::Release>) {
    let unreachable = |e| Answer::Unreachable(release_verdict::client::describe(&e, url));
    let response = match client.get(url.clone()).timeout(timeout).send().await {
        Ok(r) => r,
        Err(e) => return (unreachable(e), None),
    };
    let code = response.status();
    match response.bytes().await {
        Ok(body) => {
            let answer = classify(code, &body);
            let release = matches!(answer, Answer::Verdict(_))
                .then(|| serde_json::from_slice(&body).ok())
                .flatten();
            (answer, release)
        }
        Err(e) => (unreachable(e), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(verdict: Color, reason: &str) -> Seen {
        Seen {
            service: "checkout".into(),
            environment: "prod".into(),
            deployment_id: "checkout-2b5d9af".into(),
            verdict,
            reason: reason.into(),
        }
    }

    #[test]
    fn green_and_red_end_the_wait_at_once() {
        let mut g = Gate::default();
        let o = g.observe(Answer::Verdict(seen(Color::Green, "ok")), false);
        assert_eq!(o, Some(Decision::Green(seen(Color::Green, "ok"))));
        assert_eq!(o.unwrap().exit_code(), 0);
        let o = Gate::default().observe(Answer::Verdict(seen(Color::Red, "errors")), false);
        assert_eq!(o.as_ref().map(Decision::exit_code), Some(1));
    }

    #[test]
    fn yellow_waits_then_is_undecided_at_the_timeout() {
        let mut g = Gate::default();
        assert_eq!(
            g.observe(Answer::Verdict(seen(Color::Yellow, "a")), false),
            None
        );
        let o = g.observe(Answer::Verdict(seen(Color::Yellow, "b")), true);
        assert_eq!(o, Some(Decision::Undecided(seen(Color::Yellow, "b"), None)));
        assert_eq!(o.unwrap().exit_code(), 2);
    }

    #[test]
    fn yellow_then_unreachable_at_the_timeout_is_still_undecided() {
        let mut g = Gate::default();
        g.observe(Answer::Verdict(seen(Color::Yellow, "a")), false);
        assert_eq!(g.observe(Answer::Unreachable("down".into()), false), None);
        let o = g.observe(Answer::Unreachable("down".into()), true).unwrap();
        assert_eq!(
            o,
            Decision::Undecided(seen(Color::Yellow, "a"), Some("down".into()))
        );
        assert!(o
            .message("x", Duration::from_secs(5))
            .contains("last poll failed: down"));
    }

    #[test]
    fn never_a_verdict_is_unavailable_not_undecided() {
        let mut g = Gate::default();
        assert_eq!(g.observe(Answer::Unknown("no release".into()), false), None);
        assert_eq!(
            g.observe(Answer::Unreachable("refused".into()), false),
            None
        );
        let o = g
            .observe(Answer::Unknown("no release".into()), true)
            .unwrap();
        assert_eq!(o, Decision::Unavailable("no release".into()));
        assert_eq!(o.exit_code(), 3);
    }

    #[test]
    fn unknown_then_green_passes() {
        let mut g = Gate::default();
        assert_eq!(g.observe(Answer::Unknown("not yet".into()), false), None);
        let o = g.observe(Answer::Verdict(seen(Color::Green, "ok")), false);
        assert_eq!(o.map(|o| o.exit_code()), Some(0));
    }

    #[test]
    fn ambiguous_ends_at_once_and_lists_the_matches() {
        let m = vec![
            Candidate {
                service: "a".into(),
                environment: "prod".into(),
            },
            Candidate {
                service: "b".into(),
                environment: "prod".into(),
            },
        ];
        let o = Gate::default()
            .observe(Answer::Ambiguous(m.clone()), false)
            .unwrap();
        assert_eq!(o.exit_code(), 4);
        let msg = o.message("v42", Duration::from_secs(1));
        assert!(
            msg.contains(r#"--service "a" --environment "prod""#),
            "{msg}"
        );
        assert!(msg.contains(r#"--service "b""#), "{msg}");
    }

    #[test]
    fn classifies_the_api_answers() {
        let body = br#"{"service":"s","environment":"e","deployment_id":"d","git_sha":null,
            "verdict":"red","reason":"errors up","checks":[]}"#;
        let a = classify(StatusCode::OK, body);
        assert!(
            matches!(a, Answer::Verdict(Seen { verdict: Color::Red, ref reason, .. }) if reason == "errors up")
        );
        let a = classify(StatusCode::NOT_FOUND, br#"{"error":"no release \"x\""}"#);
        assert_eq!(a, Answer::Unknown("no release \"x\"".into()));
        let a = classify(StatusCode::NOT_FOUND, b"not found");
        assert!(matches!(a, Answer::Unknown(ref m) if m.contains("HTTP port")));
        let a = classify(
            StatusCode::CONFLICT,
            br#"{"error":"ambiguous","matches":[{"service":"a","environment":"b"}]}"#,
        );
        assert_eq!(
            a,
            Answer::Ambiguous(vec![Candidate {
                service: "a".into(),
                environment: "b".into()
            }])
        );
        assert!(matches!(
            classify(StatusCode::SERVICE_UNAVAILABLE, b""),
            Answer::Unreachable(_)
        ));
        assert!(matches!(
            classify(StatusCode::OK, b"<html>"),
            Answer::Unreachable(_)
        ));
        assert!(matches!(
            classify(
                StatusCode::OK,
                br#"{"service":"s","environment":"e","deployment_id":"d","verdict":"blue"}"#
            ),
            Answer::Unreachable(_)
        ));
    }

    #[test]
    fn progress_changes_with_the_gist_not_the_counts() {
        let a = Answer::Verdict(seen(Color::Yellow, "insufficient data: canary 20 of 300"));
        let b = Answer::Verdict(seen(Color::Yellow, "insufficient data: canary 80 of 300"));
        let c = Answer::Verdict(seen(
            Color::Yellow,
            "marginal: not conclusive yet on latency",
        ));
        assert_eq!(a.progress().0, b.progress().0);
        assert_ne!(b.progress().0, c.progress().0);
        assert_eq!(
            c.progress().1,
            "gate: yellow: marginal: not conclusive yet on latency"
        );
    }

    #[test]
    fn builds_the_verdict_url() {
        let u = verdict_url("http://127.0.0.1:4318", "a/b c", None, None).unwrap();
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:4318/api/v1/releases/a%2Fb%20c"
        );
        let u = verdict_url(
            "https://rv.example/verdicts/",
            "v1",
            Some("check out"),
            Some("prod"),
        )
        .unwrap();
        assert_eq!(
            u.as_str(),
            "https://rv.example/verdicts/api/v1/releases/v1?service=check+out&environment=prod"
        );
        assert!(matches!(
            verdict_url("localhost:4318", "x", None, None),
            Err(UrlError::Scheme(_))
        ));
        assert!(matches!(
            verdict_url("not a url", "x", None, None),
            Err(UrlError::Parse(..))
        ));
    }
}
