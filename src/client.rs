//! What the daemon's own clients (`gate`, `event`, `loadgen`) share: the
//! bearer token they send when the daemon asks for one (`[auth]`), and the
//! CA they trust when it speaks TLS with a private CA (`[server.tls]`).

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};

/// The environment variable the clients read their token from.
pub const TOKEN_ENV: &str = "RELEASE_VERDICT_TOKEN";

/// The environment variable the clients read their CA file from.
pub const CA_FILE_ENV: &str = "RELEASE_VERDICT_CA_FILE";

/// The `Authorization: Bearer …` header for `token`; none without one.
pub fn bearer(token: Option<&str>) -> Result<HeaderMap, String> {
    let mut headers = HeaderMap::new();
    if let Some(token) = token.filter(|t| !t.is_empty()) {
        let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| "the token has characters a header cannot carry".to_string())?;
        value.set_sensitive(true);
        headers.insert(AUTHORIZATION, value);
    }
    Ok(headers)
}

/// An HTTP client that sends `token` on every request and, given a PEM
/// file of CA certificates, trusts them besides the usual roots.
pub fn http(
    token: Option<&str>,
    ca_file: Option<&std::path::Path>,
) -> Result<reqwest::ClientBuilder, String> {
    let mut builder = reqwest::Client::builder().default_headers(bearer(token)?);
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("--ca-file {}: {e}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("--ca-file {}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "--ca-file {}: no PEM certificate in it",
                path.display()
            ));
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    Ok(builder)
}
