//! Generic webhooks: the event as JSON, signed with HMAC-SHA256 so a
//! receiver can tell it came from this daemon and was not replayed. Pure.
//!
//! Headers: `X-Release-Verdict-Delivery` (the idempotency key, the same on
//! every retry), `X-Release-Verdict-Event` (the type),
//! `X-Release-Verdict-Timestamp` (Unix seconds when signed) and
//! `X-Release-Verdict-Signature: sha256=<hex>`, the HMAC-SHA256 with the
//! sink's secret of `<timestamp>.<body>`. To verify: recompute it over the
//! raw body, compare in constant time, and refuse timestamps more than a
//! few minutes old.

use ring::hmac;
use serde_json::Value;

use crate::ledger::event::Event;

pub const DELIVERY_HEADER: &str = "x-release-verdict-delivery";
pub const EVENT_HEADER: &str = "x-release-verdict-event";
pub const TIMESTAMP_HEADER: &str = "x-release-verdict-timestamp";
pub const SIGNATURE_HEADER: &str = "x-release-verdict-signature";

/// The body: the event as `/api/v1/events` serves it, with its ledger id.
pub fn body(event_row: i64, e: &Event) -> Vec<u8> {
    let mut v = serde_json::to_value(e).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("id".into(), event_row.into());
    }
    serde_json::to_vec(&v).unwrap_or_default()
}

/// `sha256=<hex>` of HMAC-SHA256(secret, "<timestamp>.<body>").
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    let tag = ctx.sign();
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // RFC 4231 test case 2 ("Jefe"), with the message split as we sign it.
        let sig = signature(b"Jefe", 0, b"");
        assert!(sig.starts_with("sha256=") && sig.len() == 7 + 64);
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"Jefe");
        let tag = hmac::sign(&key, b"what do ya want for nothing?");
        let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(signature(b"Jefe", 12, b"{}"), {
            let t = hmac::sign(&key, b"12.{}");
            let h: String = t.as_ref().iter().map(|b| format!("{b:02x}")).collect();
            format!("sha256={h}")
        });
    }
}
