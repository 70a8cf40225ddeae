//! The token-level view of a policies text: statements split at `;`, keyword
//! positions for messages, and the USING / WITH CHECK text exactly as written (sliced from the
//! input by the tokens' 1-based line and character-column locations).

use sqlparser::{
    keywords::Keyword,
    tokenizer::{Location, Token, TokenWithSpan},
};

use super::error::Pos;

pub(super) fn is_blank(t: &TokenWithSpan) -> bool {
    matches!(t.token, Token::Whitespace(_))
}

/// The token runs between `;` tokens (a `;` in a string literal is inside its token), blank ones
/// dropped.
pub(super) fn statements(tokens: Vec<TokenWithSpan>) -> Vec<Vec<TokenWithSpan>> {
    let mut out = vec![Vec::new()];
    for t in tokens {
        match t.token {
            Token::SemiColon => out.push(Vec::new()),
            _ => out.last_mut().expect("never empty").push(t),
        }
    }
    out.retain(|s| !s.iter().all(is_blank));
    out
}

/// Byte offsets of sqlparser's 1-based (line, column in characters) locations.
pub(super) struct LineIndex<'t> {
    text: &'t str,
    starts: Vec<usize>,
}

impl<'t> LineIndex<'t> {
    pub(super) fn new(text: &'t str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self { text, starts }
    }

    fn offset(&self, l: Location) -> Option<usize> {
        let start = *self
            .starts
            .get(usize::try_from(l.line).ok()?.checked_sub(1)?)?;
        let col = usize::try_from(l.column).ok()?.checked_sub(1)?;
        Some(
            self.text[start..]
                .char_indices()
                .nth(col)
                .map_or(self.text.len(), |(i, _)| start + i),
        )
    }
}

/// The top-level (outside parentheses) tokens of a statement, blanks skipped.
pub(super) fn top_level(tokens: &[TokenWithSpan]) -> impl Iterator<Item = (usize, &TokenWithSpan)> {
    let mut depth = 0usize;
    tokens.iter().enumerate().filter(move |(_, t)| {
        let top = depth == 0;
        match t.token {
            Token::LParen => depth += 1,
            Token::RParen => depth = depth.saturating_sub(1),
            _ => {}
        }
        top && !is_blank(t)
    })
}

pub(super) fn is_kw(t: &TokenWithSpan, kw: Keyword) -> bool {
    matches!(&t.token, Token::Word(w) if w.keyword == kw && w.quote_style.is_none())
}

/// Where the first top-level `kw` of the statement is.
pub(super) fn find_kw(tokens: &[TokenWithSpan], kw: Keyword) -> Option<Pos> {
    top_level(tokens)
        .find(|(_, t)| is_kw(t, kw))
        .and_then(|(_, t)| Pos::from_location(t.span.start))
}

/// The text inside the parentheses that follow the top-level keywords `kws`, trimmed, and
/// where it starts.
pub(super) fn clause(
    tokens: &[TokenWithSpan],
    lines: &LineIndex<'_>,
    kws: &[Keyword],
) -> Option<(String, Pos)> {
    let top: Vec<_> = top_level(tokens).collect();
    let at = top
        .windows(kws.len())
        .position(|w| w.iter().zip(kws).all(|((_, t), k)| is_kw(t, *k)))?;
    let (open, paren) = *top.get(at + kws.len())?;
    if paren.token != Token::LParen {
        return None;
    }
    let mut depth = 0usize;
    let close = tokens[open..].iter().find(|t| {
        match t.token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            _ => {}
        }
        depth == 0
    })?;
    let from = lines.offset(paren.span.end)?;
    let to = lines.offset(close.span.start)?;
    let body = lines.text.get(from..to)?.trim();
    Some((body.to_owned(), Pos::from_location(paren.span.end)?))
}
