//! Redaction of URLs that may carry credentials: a database URL
//! (`postgres://user:pass@host/db`, or `?password=` in its query), a
//! self-hosted model endpoint behind basic auth, and the same URLs where an
//! HTTP client or driver quotes them inside an error message. What cannot
//! be parsed is hidden, not returned as it came.

/// Query parameters whose value is a credential.
const SECRET_PARAMETERS: [&str; 9] = [
    "password",
    "pass",
    "pwd",
    "sslpassword",
    "token",
    "secret",
    "key",
    "api_key",
    "apikey",
];

const HIDDEN: &str = "***";

/// A URL with any password (in its user info or its query) replaced, fit
/// for a log line or an error. An unparsable URL is hidden but for its
/// scheme, since a credential in it cannot be found reliably.
pub fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return match url.split_once("://") {
            Some((scheme, _)) if is_scheme(scheme) => format!("{scheme}://(unparsable URL hidden)"),
            _ => "(unparsable URL hidden)".into(),
        };
    };
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some(HIDDEN));
    }
    if parsed.query().is_some() {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(name, value)| {
                let hide = SECRET_PARAMETERS.contains(&name.to_ascii_lowercase().as_str());
                let value = if hide {
                    HIDDEN.to_string()
                } else {
                    value.into_owned()
                };
                (name.into_owned(), value)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

/// `text` with every URL in it redacted: for error messages that quote the
/// URL they failed on (reqwest, database drivers).
pub fn redact_urls_in(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let start = rest[..at]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |i| i + 1);
        let scheme = &rest[start..at];
        let end = rest[at..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`'))
            .map_or(rest.len(), |i| at + i);
        // A URL quoted in parentheses keeps its closing one outside.
        let url_end = if rest[start..end].ends_with(')') && !rest[start..end].contains('(') {
            end - 1
        } else {
            end
        };
        out.push_str(&rest[..start]);
        if is_scheme(scheme) {
            out.push_str(&redact_url(&rest[start..url_end]));
        } else {
            out.push_str(&rest[start..url_end]);
        }
        rest = &rest[url_end..];
    }
    out.push_str(rest);
    out
}

fn is_scheme(text: &str) -> bool {
    text.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_in_the_user_info_is_hidden() {
        let shown = redact_url("postgres://maya:hunter2@db.example.com:5432/soloist");
        assert_eq!(shown, "postgres://maya:***@db.example.com:5432/soloist");
    }

    #[test]
    fn a_password_in_the_query_is_hidden() {
        let shown =
            redact_url("postgres://maya@db.example.com/soloist?sslmode=require&password=hunter2");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("sslmode=require"), "{shown}");
        assert!(shown.contains("password=***"), "{shown}");
    }

    #[test]
    fn an_unparsable_url_is_hidden_not_returned() {
        let shown = redact_url("postgres://maya:hunter2@[not-a-host/soloist");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.starts_with("postgres://"), "{shown}");
        let bad_port = redact_url("postgres://maya:hunter2@db:port/soloist");
        assert!(!bad_port.contains("hunter2"), "{bad_port}");
    }

    #[test]
    fn urls_quoted_in_an_error_message_are_redacted() {
        let message = "error sending request for url (http://maya:hunter2@10.0.0.5:8080/v1/chat/completions): connection refused; also https://h/x?token=abc123.";
        let shown = redact_urls_in(message);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("abc123"), "{shown}");
        assert!(shown.starts_with("error sending request for url (http://maya:***@10.0.0.5:8080/v1/chat/completions): connection refused"), "{shown}");
    }

    #[test]
    fn text_without_urls_is_unchanged() {
        let text = "HTTP 500: upstream exploded (ratio 3:1)";
        assert_eq!(redact_urls_in(text), text);
    }
}
