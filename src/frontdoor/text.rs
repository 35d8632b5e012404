//! Small text helpers every platform needs, written once.

/// Length in UTF-16 code units: how Telegram and Discord count a
/// message's characters for their limits.
pub fn utf16_len(text: &str) -> usize {
    text.chars().map(char::len_utf16).sum()
}

/// An error with its causes, on one line, with any URL in it redacted (for the log; the operator gets
/// a sentence).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    // Drivers and HTTP clients quote the URL they failed on, which may
    // carry credentials.
    crate::config::redact_urls_in(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_emoji_counts_twice_as_the_platforms_count_it() {
        assert_eq!(utf16_len("ab"), 2);
        assert_eq!(utf16_len("😀"), 2);
        assert_eq!(utf16_len("é"), 1);
    }

    #[test]
    fn the_chain_names_every_cause_in_order() {
        let io = std::io::Error::other("disk full");
        #[derive(Debug, thiserror::Error)]
        #[error("saving failed")]
        struct Saving(#[source] std::io::Error);
        assert_eq!(error_chain(&Saving(io)), "saving failed: disk full");
    }
}
