//! Documents into chunks that follow their structure: a Markdown heading
//! starts a section (its path is the headings above it), paragraphs are
//! kept whole where they fit, and a section longer than the size bound is
//! cut between paragraphs (or sentences, or words) with an overlap, so a
//! fact near a cut is found from either side. HTML is turned into the same
//! Markdown-ish text first; plain text is one section of paragraphs.

/// The formats soloist reads, picked from a file's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Markdown,
    Text,
    Html,
}

impl Format {
    /// None for extensions soloist does not read (images, PDFs, …).
    pub fn from_extension(ext: &str) -> Option<Format> {
        match ext.to_ascii_lowercase().as_str() {
            "md" | "markdown" => Some(Format::Markdown),
            "txt" | "text" => Some(Format::Text),
            "html" | "htm" => Some(Format::Html),
            _ => None,
        }
    }
}

/// One piece of a document, with where it sits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Headings from the top, joined with " > " ("Offers > Brand Sprint").
    pub section: String,
    pub text: String,
}

/// Size bounds, in characters.
#[derive(Debug, Clone, Copy)]
pub struct ChunkLimits {
    pub max_chars: usize,
    pub overlap_chars: usize,
}

/// A parsed document: its title (first top heading, if any) and chunks.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub title: Option<String>,
    pub chunks: Vec<Chunk>,
}

pub fn parse(text: &str, format: Format, limits: ChunkLimits) -> Parsed {
    let markdown = match format {
        Format::Markdown => text.to_string(),
        Format::Text => text.to_string(),
        Format::Html => html_to_markdown(text),
    };
    let sections = match format {
        Format::Text => vec![(Vec::new(), markdown)],
        _ => split_sections(&markdown),
    };
    let title = sections
        .iter()
        .find_map(|(path, _)| path.first().cloned())
        .filter(|t| !t.is_empty());
    let mut chunks = Vec::new();
    for (path, body) in sections {
        let section = path.join(" > ");
        for text in pack_paragraphs(&body, limits) {
            chunks.push(Chunk {
                section: section.clone(),
                text,
            });
        }
    }
    Parsed { title, chunks }
}

/// (heading path, body) per section, in order. Text before the first
/// heading has an empty path. Headings inside fenced code are body text.
fn split_sections(markdown: &str) -> Vec<(Vec<String>, String)> {
    let mut sections = Vec::new();
    let mut path: Vec<(usize, String)> = Vec::new();
    let mut body = String::new();
    let mut in_fence = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
        }
        match heading(line).filter(|_| !in_fence) {
            Some((level, title)) => {
                sections.push((names(&path), std::mem::take(&mut body)));
                path.retain(|(l, _)| *l < level);
                path.push((level, title));
            }
            None => {
                body.push_str(line);
                body.push('\n');
            }
        }
    }
    sections.push((names(&path), body));
    sections
        .into_iter()
        .filter(|(_, body)| !body.trim().is_empty())
        .collect()
}

fn names(path: &[(usize, String)]) -> Vec<String> {
    path.iter().map(|(_, name)| name.clone()).collect()
}

/// `## Title` → (2, "Title").
fn heading(line: &str) -> Option<(usize, String)> {
    let level = line.chars().take_while(|c| *c == '#').count();
    if !(1..=6).contains(&level) {
        return None;
    }
    let rest = &line[level..];
    if !rest.starts_with(' ') {
        return None;
    }
    let title = rest.trim().trim_end_matches('#').trim();
    (!title.is_empty()).then(|| (level, title.to_string()))
}

/// Paragraphs packed into chunks of at most `max_chars`; each chunk after
/// the first starts with the tail of the one before (`overlap_chars`).
fn pack_paragraphs(body: &str, limits: ChunkLimits) -> Vec<String> {
    let max = limits.max_chars.max(100);
    let pieces: Vec<String> = paragraphs(body)
        .into_iter()
        .flat_map(|p| split_long(&p, max))
        .collect();
    let mut chunks: Vec<String> = Vec::new();
    let mut current = String::new();
    for piece in pieces {
        let joined = current.chars().count() + piece.chars().count() + 2;
        if !current.is_empty() && joined > max {
            let overlap = tail(&current, limits.overlap_chars.min(max / 2));
            chunks.push(std::mem::take(&mut current));
            current = overlap;
        }
        if !current.is_empty() {
            current.push_str("\n\n");
        }
        current.push_str(&piece);
    }
    if !current.trim().is_empty() {
        chunks.push(current);
    }
    chunks
}

/// Blank-line separated paragraphs, lines inside one joined by newlines.
fn paragraphs(body: &str) -> Vec<String> {
    body.split("\n\n")
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// A paragraph longer than `max`, cut between sentences, or words.
fn split_long(paragraph: &str, max: usize) -> Vec<String> {
    if paragraph.chars().count() <= max {
        return vec![paragraph.to_string()];
    }
    let mut parts = Vec::new();
    let mut current = String::new();
    for word in paragraph.split_inclusive(char::is_whitespace) {
        if current.chars().count() + word.chars().count() > max && !current.is_empty() {
            parts.push(current.trim().to_string());
            current.clear();
        }
        current.push_str(word);
    }
    if !current.trim().is_empty() {
        parts.push(current.trim().to_string());
    }
    parts
}

/// The last `n` characters of `text`, from a word boundary.
fn tail(text: &str, n: usize) -> String {
    if n == 0 {
        return String::new();
    }
    let count = text.chars().count();
    if count <= n {
        return text.to_string();
    }
    let start: String = text.chars().skip(count - n).collect();
    match start.split_once(char::is_whitespace) {
        Some((_, rest)) => format!("…{}", rest.trim_start()),
        None => start,
    }
}

/// HTML to Markdown-ish text: headings become `#` lines, block elements
/// paragraphs; scripts, styles, navigation, headers and footers go. Enough
/// for saved pages and exported docs; fetched pages go through readability
/// first.
pub fn html_to_markdown(html: &str) -> String {
    let mut out = String::new();
    let mut rest = html;
    let mut skip_until: Option<String> = None;
    while let Some(open) = rest.find('<') {
        if skip_until.is_none() {
            out.push_str(&decode_entities(&rest[..open]));
        }
        let after = &rest[open + 1..];
        let Some(close) = after.find('>') else {
            break;
        };
        let tag = after[..close].trim().to_ascii_lowercase();
        rest = &after[close + 1..];
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        if let Some(until) = &skip_until {
            if tag.starts_with('/') && &name == until {
                skip_until = None;
            }
            continue;
        }
        match name.as_str() {
            "script" | "style" | "nav" | "header" | "footer" | "noscript" | "template"
                if !tag.starts_with('/') && !tag.ends_with('/') =>
            {
                skip_until = Some(name);
            }
            "h1" | "h2" | "h3" | "h4" | "h5" | "h6" if !tag.starts_with('/') => {
                let level = name[1..].parse::<usize>().unwrap_or(1);
                out.push_str("\n\n");
                out.push_str(&"#".repeat(level));
                out.push(' ');
            }
            "h1" | "h2" | "h3" | "h4" | "h5" | "h6" | "p" | "div" | "section" | "article"
            | "ul" | "ol" | "table" | "tr" | "blockquote" | "pre" => out.push_str("\n\n"),
            "li" if !tag.starts_with('/') => out.push_str("\n- "),
            "br" => out.push('\n'),
            "td" | "th" => out.push(' '),
            _ => {}
        }
    }
    if skip_until.is_none() {
        out.push_str(&decode_entities(rest));
    }
    // Whitespace inside a line is layout, not content.
    out.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n")
}

fn decode_entities(text: &str) -> String {
    text.replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&mdash;", "—")
        .replace("&ndash;", "–")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ChunkLimits = ChunkLimits {
        max_chars: 300,
        overlap_chars: 60,
    };

    #[test]
    fn markdown_sections_carry_their_heading_path() {
        let doc = "# Offers\n\nIntro.\n\n## Brand Sprint\n\nFive days.\n\n### Extras\n\nMore.\n\n## Audit\n\nThree days.\n";
        let parsed = parse(doc, Format::Markdown, LIMITS);
        assert_eq!(parsed.title.as_deref(), Some("Offers"));
        let sections: Vec<&str> = parsed.chunks.iter().map(|c| c.section.as_str()).collect();
        assert_eq!(
            sections,
            [
                "Offers",
                "Offers > Brand Sprint",
                "Offers > Brand Sprint > Extras",
                "Offers > Audit"
            ]
        );
        assert_eq!(parsed.chunks[3].text, "Three days.");
    }

    #[test]
    fn a_long_section_is_cut_between_paragraphs_with_overlap_and_within_bounds() {
        let paragraph = "word ".repeat(40); // 200 characters
        let doc = format!("# T\n\n{paragraph}\n\n{paragraph}\n\n{paragraph}\n");
        let parsed = parse(&doc, Format::Markdown, LIMITS);
        assert!(parsed.chunks.len() >= 2, "{parsed:?}");
        for chunk in &parsed.chunks {
            assert!(chunk.text.chars().count() <= 300 + 60 + 4, "{chunk:?}");
        }
        assert!(
            parsed.chunks[1].text.starts_with('…'),
            "{:?}",
            parsed.chunks[1]
        );
    }

    #[test]
    fn html_headings_become_sections_and_navigation_and_scripts_go() {
        let html = "<html><head><style>p{}</style></head><body><nav>Home | About</nav>\
                    <h1>Studio</h1><p>We design &amp; build.</p><script>alert(1)</script>\
                    <h2>Prices</h2><ul><li>Audit: EUR 900</li></ul><footer>© 2026</footer></body></html>";
        let parsed = parse(html, Format::Html, LIMITS);
        let all: String = parsed
            .chunks
            .iter()
            .map(|c| format!("{}|{}\n", c.section, c.text))
            .collect();
        assert!(all.contains("Studio|We design & build."), "{all}");
        assert!(all.contains("Studio > Prices|- Audit: EUR 900"), "{all}");
        for gone in ["Home", "alert", "p{}", "© 2026"] {
            assert!(!all.contains(gone), "{gone} in {all}");
        }
    }

    #[test]
    fn headings_inside_code_fences_are_text() {
        let doc = "# A\n\n```\n# not a heading\n```\n";
        let parsed = parse(doc, Format::Markdown, LIMITS);
        assert_eq!(parsed.chunks.len(), 1);
        assert!(parsed.chunks[0].text.contains("# not a heading"));
    }
}
