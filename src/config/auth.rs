//! `[auth]`: the files of bearer tokens for each scope (ingest, read,
//! write). Any path is accepted here; the server reads the files.

use serde::Deserialize;

/// Bearer tokens by scope, one per line in each file (`#` starts a
/// comment). A scope without a file is open to anyone who reaches the port.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Tokens that may send telemetry (OTLP over gRPC and HTTP).
    pub ingest_tokens_file: String,
    /// Tokens that may read verdicts, events, DORA and `/metrics`.
    pub read_tokens_file: String,
    /// Tokens that may post ledger events.
    pub write_tokens_file: String,
}
