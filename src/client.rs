//! What the daemon's own clients (`gate`, `status`, `event`, `loadgen`)
//! share: the bearer token they send when the daemon asks for one
//! (`[auth]`), the CA they trust when it speaks TLS with a private CA
//! (`[server.tls]`), the JSON API's URLs and what a failed request says.

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use reqwest::Url;

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

/// Why a `--server` URL cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    #[error("--server {0:?}: {1}")]
    Parse(String, String),
    #[error("--server {0:?}: want an http:// or https:// URL")]
    Scheme(String),
}

/// `{server}/{segments…}?{query}`, each segment percent-encoded as one
/// path segment (ids may hold `/`); a path prefix on `server` is kept.
pub fn api_url(server: &str, segments: &[&str], query: &[(&str, &str)]) -> Result<Url, UrlError> {
    let mut url = Url::parse(server).map_err(|e| UrlError::Parse(server.into(), e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(UrlError::Scheme(server.into()));
    }
    url.path_segments_mut()
        .map_err(|()| UrlError::Scheme(server.into()))?
        .pop_if_empty()
        .extend(segments);
    url.set_query(None);
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    Ok(url)
}

/// A failed request by its root cause ("Connection refused" sits at the
/// bottom of reqwest's chain; the layers above it add little).
pub fn describe(e: &reqwest::Error, url: &Url) -> String {
    let mut root: &dyn std::error::Error = e;
    while let Some(s) = root.source() {
        root = s;
    }
    let what = if e.is_timeout() {
        "no answer in time"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    format!("{url}: {what}: {root}")
}
