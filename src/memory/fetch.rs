//! Guarded page fetching for `soloist ingest URL`: http(s) only; every
//! address the host resolves to must be public (no loopback, private,
//! link-local, shared or unspecified address), checked again at every
//! redirect, and the connection goes to the address that was checked (no
//! second DNS answer in between); a timeout and a size cap; HTML is turned
//! into text without its navigation, header, footer and scripts.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use super::chunk::Format;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("'{0}' is not a web address soloist fetches (http or https only)")]
    Scheme(String),
    #[error("'{0}' is not a valid URL")]
    Invalid(String),
    #[error(
        "{0} resolves to a private, loopback or link-local address; soloist fetches public pages only"
    )]
    NotPublic(String),
    #[error("cannot resolve {0}")]
    Resolve(String, #[source] std::io::Error),
    #[error("fetching {0} failed")]
    Http(String, #[source] reqwest::Error),
    #[error("{0} answered HTTP {1}")]
    Status(String, u16),
    #[error("{0} redirects more than {1} times")]
    TooManyRedirects(String, usize),
    #[error("{0} is larger than {1} bytes")]
    TooLarge(String, usize),
}

/// Bounds on one fetch.
#[derive(Debug, Clone, Copy)]
pub struct FetchLimits {
    pub timeout: Duration,
    pub max_bytes: usize,
    pub max_redirects: usize,
}

impl Default for FetchLimits {
    fn default() -> Self {
        FetchLimits {
            timeout: Duration::from_secs(15),
            max_bytes: 2 * 1024 * 1024,
            max_redirects: 5,
        }
    }
}

/// A fetched page: where it ended up, its format and its text.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub final_url: String,
    pub format: Format,
    pub text: String,
}

/// Whether soloist may connect to `ip`: public unicast only.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        // Shared address space (carrier-grade NAT), 100.64.0.0/10.
        || (a == 100 && (64..128).contains(&b))
        // Benchmarking, 198.18.0.0/15; reserved, 240.0.0.0/4.
        || (a == 198 && (b == 18 || b == 19))
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        // Unique local fc00::/7, link-local fe80::/10.
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80)
}

/// Fetches `url` within `limits`, connecting only to addresses `allowed`
/// accepts ([`is_public`] in production; tests widen it to reach a local
/// server, never to the whole loopback range).
pub async fn fetch(
    url: &str,
    limits: FetchLimits,
    allowed: impl Fn(IpAddr) -> bool,
) -> Result<Fetched, FetchError> {
    let mut current = parse(url)?;
    for _ in 0..=limits.max_redirects {
        let address = checked_address(&current, &allowed).await?;
        let host = current.host_str().unwrap_or_default().to_string();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(limits.timeout)
            .resolve(&host, address)
            .build()
            .map_err(|e| FetchError::Http(current.to_string(), e))?;
        let response = client
            .get(current.clone())
            .header("user-agent", "soloist (knowledge ingestion)")
            .send()
            .await
            .map_err(|e| FetchError::Http(current.to_string(), e))?;
        let status = response.status();
        if status.is_redirection() {
            let location = response
                .headers()
                .get("location")
                .and_then(|l| l.to_str().ok())
                .ok_or_else(|| FetchError::Status(current.to_string(), status.as_u16()))?;
            current = parse(
                current
                    .join(location)
                    .map_err(|_| FetchError::Invalid(location.to_string()))?
                    .as_str(),
            )?;
            continue;
        }
        if !status.is_success() {
            return Err(FetchError::Status(current.to_string(), status.as_u16()));
        }
        return read_page(current, response, limits.max_bytes).await;
    }
    Err(FetchError::TooManyRedirects(
        url.to_string(),
        limits.max_redirects,
    ))
}

fn parse(url: &str) -> Result<url::Url, FetchError> {
    let parsed = url::Url::parse(url).map_err(|_| FetchError::Invalid(url.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(FetchError::Scheme(url.to_string()));
    }
    Ok(parsed)
}

/// The first address of the URL's host, when every address it resolves to
/// is allowed (one bad answer refuses the host: the client might pick it).
async fn checked_address(
    url: &url::Url,
    allowed: &impl Fn(IpAddr) -> bool,
) -> Result<SocketAddr, FetchError> {
    let host = url.host_str().unwrap_or_default();
    let port = url.port_or_known_default().unwrap_or(80);
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addresses: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((bare, port))
            .await
            .map_err(|e| FetchError::Resolve(host.to_string(), e))?
            .collect(),
    };
    match addresses.first() {
        Some(first) if addresses.iter().all(|a| allowed(a.ip())) => Ok(*first),
        _ => Err(FetchError::NotPublic(host.to_string())),
    }
}

async fn read_page(
    url: url::Url,
    mut response: reqwest::Response,
    max_bytes: usize,
) -> Result<Fetched, FetchError> {
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|c| c.to_str().ok())
        .unwrap_or("text/html")
        .to_ascii_lowercase();
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| FetchError::Http(url.to_string(), e))?
    {
        body.extend_from_slice(&chunk);
        if body.len() > max_bytes {
            return Err(FetchError::TooLarge(url.to_string(), max_bytes));
        }
    }
    let text = String::from_utf8_lossy(&body).into_owned();
    if content_type.contains("html")
        && let Some(article) = readable(&text, url.as_str())
    {
        return Ok(Fetched {
            final_url: url.to_string(),
            format: Format::Markdown,
            text: article,
        });
    }
    let format = if content_type.contains("html") {
        Format::Html
    } else if content_type.contains("markdown") || url.path().ends_with(".md") {
        Format::Markdown
    } else {
        Format::Text
    };
    Ok(Fetched {
        final_url: url.to_string(),
        format,
        text,
    })
}

/// A page's article as Markdown, its title as the top heading: what
/// readability (dom_smoothie, Mozilla's algorithm) keeps once navigation,
/// sidebars, footers and other boilerplate are scored out. None when it
/// finds no article (a short or unusual page): the caller then keeps the
/// HTML for the plain extraction, which drops only the obvious elements.
pub fn readable(html: &str, url: &str) -> Option<String> {
    let config = dom_smoothie::Config {
        text_mode: dom_smoothie::TextMode::Markdown,
        ..dom_smoothie::Config::default()
    };
    let mut reader = dom_smoothie::Readability::new(html, Some(url), Some(config)).ok()?;
    if !reader.is_probably_readable() {
        return None;
    }
    let article = reader.parse().ok()?;
    let text = article.text_content.trim();
    if text.is_empty() {
        return None;
    }
    let title = article.title.trim();
    Some(if title.is_empty() || text.starts_with("# ") {
        text.to_string()
    } else {
        format!("# {title}\n\n{text}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_unicast_addresses_are_allowed() {
        for blocked in [
            "127.0.0.1",
            "127.5.5.5",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public(blocked.parse().unwrap()), "{blocked}");
        }
        for public in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }
}
