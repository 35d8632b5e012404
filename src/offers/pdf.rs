//! A proposal's Markdown as a plain, readable A4 PDF (printpdf): headings
//! larger, bullets as "•", `**bold**` markers dropped, lines wrapped,
//! pages added as needed. The font is the DejaVu Sans the digest chart
//! already compiles in, embedded as a subset (only the glyphs used), so a
//! one-page proposal is a few kilobytes, not the font's 740 KiB.

use printpdf::{
    Mm, Op, ParsedFont, PdfDocument, PdfFontHandle, PdfPage, PdfSaveOptions, Point, Pt, TextItem,
};

use crate::digest::chart::FONT;

const PAGE_WIDTH_MM: f32 = 210.0;
const PAGE_HEIGHT_MM: f32 = 297.0;
const MARGIN_MM: f32 = 20.0;
const BODY_PT: f32 = 10.0;

/// DejaVu Sans averages about 0.55 em a character in running text; 0.6
/// keeps a line of wide letters inside the 170 mm text width too.
const EM_PER_CHAR: f32 = 0.6;

#[derive(Debug, thiserror::Error)]
pub enum PdfError {
    #[error("the compiled-in font could not be read")]
    Font,
}

/// One line as laid out: its size and text.
#[derive(Debug, Clone, PartialEq)]
struct Line {
    size: f32,
    text: String,
    /// Space above the line, in points (a heading's breathing room).
    gap: f32,
}

/// The PDF of `markdown`, titled `title`.
pub fn render(title: &str, markdown: &str) -> Result<Vec<u8>, PdfError> {
    let font = ParsedFont::from_bytes(FONT, 0, &mut Vec::new()).ok_or(PdfError::Font)?;
    let mut document = PdfDocument::new(title);
    let font_id = document.add_font(&font);
    let handle = PdfFontHandle::External(font_id);
    let pages = paginate(&layout(markdown))
        .into_iter()
        .map(|page| PdfPage::new(Mm(PAGE_WIDTH_MM), Mm(PAGE_HEIGHT_MM), ops(&page, &handle)))
        .collect();
    let options = PdfSaveOptions {
        subset_fonts: true,
        ..PdfSaveOptions::default()
    };
    Ok(document.with_pages(pages).save(&options, &mut Vec::new()))
}

/// Markdown blocks as wrapped lines.
fn layout(markdown: &str) -> Vec<Line> {
    let mut lines = Vec::new();
    for raw in markdown.lines() {
        let raw = raw.trim_end();
        let (size, gap, text, indent) = if let Some(h) = raw.strip_prefix("# ") {
            (18.0, 6.0, h.to_string(), "")
        } else if let Some(h) = raw.strip_prefix("## ") {
            (13.0, 8.0, h.to_string(), "")
        } else if let Some(h) = raw.strip_prefix("### ") {
            (11.5, 6.0, h.to_string(), "")
        } else if let Some(item) = raw.trim_start().strip_prefix("- ") {
            (BODY_PT, 0.0, format!("•  {item}"), "   ")
        } else if let Some(item) = raw.trim_start().strip_prefix("* ") {
            (BODY_PT, 0.0, format!("•  {item}"), "   ")
        } else {
            (BODY_PT, 0.0, raw.to_string(), "")
        };
        let text = text.replace("**", "").replace('`', "");
        if text.trim().is_empty() {
            lines.push(Line {
                size: BODY_PT,
                text: String::new(),
                gap: 0.0,
            });
            continue;
        }
        let width = ((PAGE_WIDTH_MM - 2.0 * MARGIN_MM) * 72.0 / 25.4) / (size * EM_PER_CHAR);
        for (i, piece) in wrap(&text, width as usize, indent).into_iter().enumerate() {
            lines.push(Line {
                size,
                text: piece,
                gap: if i == 0 { gap } else { 0.0 },
            });
        }
    }
    lines
}

/// Words joined into lines of at most `width` characters; a word longer
/// than a line is cut. Continuation lines start with `indent`.
fn wrap(text: &str, width: usize, indent: &str) -> Vec<String> {
    let width = width.max(10);
    let mut out = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let mut word = word.to_string();
        while word.chars().count() > width {
            let head: String = word.chars().take(width).collect();
            if !line.trim().is_empty() {
                out.push(std::mem::take(&mut line));
            }
            out.push(head);
            word = word.chars().skip(width).collect();
        }
        let needed = line.chars().count() + 1 + word.chars().count();
        if !line.trim().is_empty() && needed > width {
            out.push(std::mem::take(&mut line));
            line.push_str(indent);
        }
        if !line.is_empty() && !line.ends_with(' ') {
            line.push(' ');
        }
        line.push_str(&word);
    }
    if !line.trim().is_empty() {
        out.push(line);
    }
    out
}

/// Lines split into pages by height.
fn paginate(lines: &[Line]) -> Vec<Vec<(f32, Line)>> {
    let top = (PAGE_HEIGHT_MM - MARGIN_MM) * 72.0 / 25.4;
    let bottom = MARGIN_MM * 72.0 / 25.4;
    let mut pages = vec![Vec::new()];
    let mut y = top;
    for line in lines {
        let step = line.size * 1.4 + line.gap;
        if y - step < bottom {
            pages.push(Vec::new());
            y = top;
        }
        y -= step;
        if let Some(page) = pages.last_mut() {
            page.push((y, line.clone()));
        }
    }
    pages
}

fn ops(page: &[(f32, Line)], font: &PdfFontHandle) -> Vec<Op> {
    let x = Mm(MARGIN_MM).into_pt();
    let mut ops = Vec::new();
    for (y, line) in page.iter().filter(|(_, l)| !l.text.is_empty()) {
        ops.extend([
            Op::StartTextSection,
            Op::SetFont {
                font: font.clone(),
                size: Pt(line.size),
            },
            Op::SetTextCursor {
                pos: Point { x, y: Pt(*y) },
            },
            Op::ShowText {
                items: vec![TextItem::Text(line.text.clone())],
            },
            Op::EndTextSection,
        ]);
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proposal_renders_as_a_small_pdf_with_the_font_subset() {
        let markdown = "# Proposal\n\n## Price\n\n- Brand Sprint: **EUR 4,800**\n\nSome text.";
        let pdf = render("Proposal", markdown).unwrap();
        assert!(pdf.starts_with(b"%PDF-"));
        // The whole font is 740 KiB; a subset of a few glyphs is far less.
        assert!(pdf.len() < 120_000, "{} bytes", pdf.len());
    }

    #[test]
    fn long_text_wraps_and_flows_onto_a_second_page() {
        let paragraph = "word ".repeat(2000);
        let pages = paginate(&layout(&paragraph));
        assert!(pages.len() >= 2);
        for (_, line) in pages.iter().flatten() {
            assert!(line.text.chars().count() <= 90, "{}", line.text);
        }
    }
}
