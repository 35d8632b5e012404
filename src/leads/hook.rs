//! `POST /hooks/lead`: a lead from a web form or another system. The body
//! is JSON (the fields of a lead: `name`, `company`, `email`, `message`,
//! an optional `id` used as the idempotency key, …) or a form post.
//!
//! Authenticated by the shared secret `hooks.lead_secret`, sent either as
//! `Authorization: Bearer <secret>` or as `X-Soloist-Signature:
//! sha256=<hex HMAC-SHA256 of the body>` (both compared in constant time).
//! Answers: 202 once stored (again 202 for a lead already stored: the same
//! `id` twice is one lead), 401 storing nothing, 413 over 64 KB, 422 for a
//! body that is not a lead, 503 when the database is down (the sender
//! retries).

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use hmac::{Hmac, Mac};
use subtle::ConstantTimeEq;

use super::{HookSettings, LeadError, MAX_BODY, parse_body, store_lead};
use crate::http::Hook;
use crate::store::Store;

/// Where the hook is served.
pub const PATH: &str = "/hooks/lead";

/// The hook, for [`crate::http::Hooks::mount`].
pub fn hook(store: Store, settings: HookSettings) -> Hook {
    let settings = Arc::new(settings);
    Arc::new(move |headers, body| {
        let (store, settings) = (store.clone(), settings.clone());
        Box::pin(async move { receive(&store, &settings, &headers, &body).await })
    })
}

#[tracing::instrument(skip_all, fields(bytes = body.len()))]
async fn receive(
    store: &Store,
    settings: &HookSettings,
    headers: &HeaderMap,
    body: &Bytes,
) -> StatusCode {
    if body.len() > MAX_BODY {
        tracing::warn!("a lead over 64 KB was refused");
        return StatusCode::PAYLOAD_TOO_LARGE;
    }
    if !authorized(settings, headers, body) {
        tracing::warn!("a lead without the right secret or signature was refused");
        return StatusCode::UNAUTHORIZED;
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let lead = match parse_body(body, content_type) {
        Ok(lead) => lead,
        Err(error) => {
            tracing::warn!(%error, "a lead that could not be read was refused");
            return StatusCode::UNPROCESSABLE_ENTITY;
        }
    };
    match store_lead(store, &lead).await {
        Ok(fresh) => {
            tracing::info!(fresh, source = %lead.source, "lead received");
            StatusCode::ACCEPTED
        }
        Err(error) => {
            let error = LeadError::from(error);
            tracing::error!(error = ?error, "storing a lead failed; the sender should retry");
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
}

/// The bearer secret, or an HMAC-SHA256 signature of the body made with it.
/// No secret configured: nothing is authorized.
fn authorized(settings: &HookSettings, headers: &HeaderMap, body: &[u8]) -> bool {
    let Some(secret) = settings.lead_secret.expose() else {
        return false;
    };
    let header_text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(offered) =
        header_text(header::AUTHORIZATION.as_str()).and_then(|v| v.strip_prefix("Bearer "))
    {
        return bool::from(offered.trim().as_bytes().ct_eq(secret.as_bytes()));
    }
    if let Some(signature) =
        header_text("x-soloist-signature").and_then(|v| v.strip_prefix("sha256="))
    {
        return signature_matches(secret, body, signature.trim());
    }
    false
}

fn signature_matches(secret: &str, body: &[u8], hex_signature: &str) -> bool {
    let Some(offered) = decode_hex(hex_signature) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    // verify_slice compares in constant time.
    mac.verify_slice(&offered).is_ok()
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The signature a sender puts in `X-Soloist-Signature` (for senders written
/// in Rust, and the tests).
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> HookSettings {
        HookSettings {
            lead_secret: crate::config::Secret::new("s3cret"),
        }
    }

    #[test]
    fn a_signature_made_with_another_key_or_body_is_refused() {
        let body = br#"{"message":"hi"}"#;
        let mut good = HeaderMap::new();
        good.insert("x-soloist-signature", sign("s3cret", body).parse().unwrap());
        let mut forged = HeaderMap::new();
        forged.insert("x-soloist-signature", sign("guess", body).parse().unwrap());
        assert!(authorized(&settings(), &good, body));
        assert!(!authorized(&settings(), &forged, body));
        assert!(!authorized(&settings(), &good, br#"{"message":"changed"}"#));
    }

    #[test]
    fn without_a_configured_secret_nothing_is_authorized() {
        let mut bearer = HeaderMap::new();
        bearer.insert(header::AUTHORIZATION, "Bearer ".parse().unwrap());
        assert!(!authorized(&HookSettings::default(), &bearer, b""));
    }
}
