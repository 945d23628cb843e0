//! Replay: recorded OTLP/JSON lines through the same engine, on telemetry time.

use release_verdict::config::Config;
use release_verdict::replay::replay;
use release_verdict::sim::{otlp, Scenario};

const START: u64 = 1_763_800_000_000_000_000; // 2025-11-22T08:26:40Z

fn lines(s: &Scenario, seed: u64) -> String {
    otlp::requests(s, seed, START)
        .iter()
        .map(|r| serde_json::to_string(r).unwrap() + "\n")
        .collect()
}

fn run(input: &str) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let summary = replay(Config::default(), input.as_bytes(), &mut out, false).unwrap();
    assert_eq!(summary.skipped, 0, "{summary:?}");
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_bad_canary_turns_red_in_telemetry_time() {
    let bad = Scenario {
        canary_error: 0.08,
        warmup: 60,
        duration: 90,
        ..Scenario::a_a("bad", 100.0)
    };
    let verdicts = run(&lines(&bad, 42));
    let red = verdicts
        .iter()
        .find(|v| v["deployment_id"] == "checkout-2b5d9af" && v["verdict"] == "red")
        .expect("the canary turned red");
    assert_eq!(red["baseline"]["deployment_id"], "checkout-1a2b3c4");
    let check = red["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "error_ratio")
        .unwrap();
    assert_eq!(check["result"], "fail");
    assert!(check["statistic"]["e_value"].as_f64().unwrap() >= 100.0);
    // evaluated_at is telemetry time: within the recording, not today
    let at = red["evaluated_at"].as_str().unwrap();
    assert!(
        at.starts_with("2025-11-22T08:2") || at.starts_with("2025-11-22T08:3"),
        "{at}"
    );
    assert!(red["reason"].as_str().unwrap().contains("error ratio"));
}

#[test]
fn a_healthy_canary_turns_green_and_never_red() {
    let good = Scenario {
        warmup: 60,
        duration: 120,
        ..Scenario::a_a("good", 400.0)
    };
    let verdicts = run(&lines(&good, 7));
    let canary: Vec<_> = verdicts
        .iter()
        .filter(|v| v["deployment_id"] == "checkout-2b5d9af")
        .collect();
    assert!(canary.iter().any(|v| v["verdict"] == "green"), "{canary:?}");
    assert!(canary.iter().all(|v| v["verdict"] != "red"));
}

#[test]
fn replay_is_deterministic() {
    let s = Scenario {
        canary_slowdown: 1.5,
        warmup: 30,
        duration: 60,
        ..Scenario::a_a("slow", 100.0)
    };
    let input = lines(&s, 3);
    let a = run(&input);
    let b = run(&input);
    assert!(!a.is_empty());
    assert_eq!(a, b);
}

#[test]
fn bad_lines_are_counted_not_fatal() {
    let s = Scenario {
        warmup: 5,
        duration: 5,
        ..Scenario::a_a("x", 10.0)
    };
    let input = format!("not json\n{}{{\"resourceLogs\":[]}}\n", lines(&s, 1));
    let mut out = Vec::new();
    let summary = replay(Config::default(), input.as_bytes(), &mut out, true).unwrap();
    assert_eq!(summary.skipped, 2);
    assert!(summary.first_problem.unwrap().starts_with("line 1:"));
    // --every-tick prints both releases at every tick
    assert!(
        summary.verdicts_printed >= 10,
        "{}",
        summary.verdicts_printed
    );
}

/// The binary, run from a directory with no config.toml: built-in defaults,
/// said once; a named config file that is missing stays an error (78).
#[test]
fn replay_runs_anywhere_without_a_config_file() {
    let dir = std::env::temp_dir().join(format!("rv-noconfig-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("recorded.jsonl");
    let bad = Scenario {
        canary_error: 0.08,
        warmup: 30,
        duration: 60,
        ..Scenario::a_a("bad", 100.0)
    };
    std::fs::write(&input, lines(&bad, 7)).unwrap();
    let bin = env!("CARGO_BIN_EXE_release-verdict");
    let out = std::process::Command::new(bin)
        .args(["replay", "recorded.jsonl"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("built-in defaults"), "{stderr}");
    let verdicts = String::from_utf8_lossy(&out.stdout);
    assert!(verdicts.contains(r#""verdict":"red""#), "{verdicts}");

    let out = std::process::Command::new(bin)
        .args(["replay", "recorded.jsonl", "--config", "missing.toml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));
    std::fs::remove_dir_all(&dir).ok();
}

/// A forged timestamp at the end of time must not become the replay's
/// clock: it used to overflow the rolling window's arithmetic and panic.
#[test]
fn a_span_ending_at_the_end_of_time_does_not_move_the_clock() {
    let s = Scenario {
        warmup: 5,
        duration: 5,
        ..Scenario::a_a("x", 10.0)
    };
    let mut reqs = otlp::requests(&s, 1, START);
    let span = &mut reqs[0].resource_spans[0].scope_spans[0].spans[0];
    span.start_time_unix_nano = u64::MAX - 1;
    span.end_time_unix_nano = u64::MAX;
    let input: String = reqs
        .iter()
        .map(|r| serde_json::to_string(r).unwrap() + "\n")
        .collect();
    let mut out = Vec::new();
    let summary = replay(Config::default(), input.as_bytes(), &mut out, false).unwrap();
    assert_eq!(summary.skipped, 0, "{summary:?}");
    let last: serde_json::Value =
        serde_json::from_str(String::from_utf8(out).unwrap().lines().last().unwrap()).unwrap();
    assert!(
        last["evaluated_at"]
            .as_str()
            .unwrap()
            .starts_with("2025-11-22"),
        "{last}"
    );
}
