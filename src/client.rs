//! What the daemon's own clients (`gate`, `event`, `loadgen`) share: the
//! bearer token they send when the daemon asks for one (`[auth]`).

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};

/// The environment variable the clients read their token from.
pub const TOKEN_ENV: &str = "RELEASE_VERDICT_TOKEN";

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

/// An HTTP client that sends `token` on every request.
pub fn http(token: Option<&str>) -> Result<reqwest::ClientBuilder, String> {
    Ok(reqwest::Client::builder().default_headers(bearer(token)?))
}
