//! `LIKE` and `ILIKE` as PostgreSQL matches them: `%` is any run of characters (the empty one
//! included), `_` exactly one character, `\` makes the next character literal (the default
//! `ESCAPE`). Characters, not bytes. `ILIKE` compares lowercase forms. Greedy with a single
//! backtrack point: O(text x pattern) worst case, linear for usual patterns; no allocation.

/// Whether a pattern is well-formed: PostgreSQL refuses one that ends with a lone `\`.
pub(crate) fn valid_pattern(pattern: &str) -> bool {
    let mut escaped = false;
    for c in pattern.chars() {
        escaped = !escaped && c == '\\';
    }
    !escaped
}

enum Tok {
    Any,
    One,
    Lit(char),
}

/// The pattern token at byte `i` and its length in bytes. `valid_pattern` holds.
fn tok_at(p: &str, i: usize) -> (Tok, usize) {
    let mut it = p[i..].chars();
    match it.next() {
        Some('%') => (Tok::Any, 1),
        Some('_') => (Tok::One, 1),
        Some('\\') => {
            let c = it.next().unwrap_or('\\');
            (Tok::Lit(c), 1 + c.len_utf8())
        }
        Some(c) => (Tok::Lit(c), c.len_utf8()),
        None => unreachable!("called within the pattern"),
    }
}

fn same(a: char, b: char, case_insensitive: bool) -> bool {
    a == b || (case_insensitive && a.to_lowercase().eq(b.to_lowercase()))
}

/// `text LIKE pattern`; `None` when the pattern is not valid (see `valid_pattern`).
pub(crate) fn like(text: &str, pattern: &str, case_insensitive: bool) -> Option<bool> {
    if !valid_pattern(pattern) {
        return None;
    }
    let (mut ti, mut pi) = (0, 0);
    // After the last `%`: where the pattern resumes, and where in the text it was tried.
    let mut star: Option<(usize, usize)> = None;
    loop {
        if pi < pattern.len() {
            let (tok, len) = tok_at(pattern, pi);
            if let Tok::Any = tok {
                pi += len;
                star = Some((pi, ti));
                continue;
            }
            if let Some(c) = text[ti..].chars().next() {
                let hit = match tok {
                    Tok::One => true,
                    Tok::Lit(p) => same(c, p, case_insensitive),
                    Tok::Any => unreachable!(),
                };
                if hit {
                    pi += len;
                    ti += c.len_utf8();
                    continue;
                }
            }
        } else if ti == text.len() {
            return Some(true);
        }
        // Mismatch: let the last `%` swallow one more character, if any is left.
        match star {
            Some((sp, st)) if st < text.len() => {
                let st = st + text[st..].chars().next().map_or(1, char::len_utf8);
                star = Some((sp, st));
                pi = sp;
                ti = st;
            }
            _ => return Some(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_table() {
        let cases: &[(&str, &str, bool, Option<bool>)] = &[
            ("", "", false, Some(true)),
            ("", "%", false, Some(true)),
            ("", "_", false, Some(false)),
            ("abc", "abc", false, Some(true)),
            ("abc", "ab", false, Some(false)),
            ("ab", "abc", false, Some(false)),
            ("abc", "a%", false, Some(true)),
            ("abc", "%c", false, Some(true)),
            ("abc", "%b%", false, Some(true)),
            ("abc", "%%%", false, Some(true)),
            ("abc", "a_c", false, Some(true)),
            ("abc", "a__c", false, Some(false)),
            ("abc", "___", false, Some(true)),
            ("order:1:x", "order:%:x", false, Some(true)),
            ("order:1:y:x", "order:%:x", false, Some(true)),
            ("order:1:xy", "order:%:x", false, Some(false)),
            ("aaa", "%a%a%a%", false, Some(true)),
            ("aa", "%a%a%a%", false, Some(false)),
            ("mississippi", "%iss%ppi", false, Some(true)),
            // Characters, not bytes.
            ("é", "_", false, Some(true)),
            ("日本語", "日_語", false, Some(true)),
            ("日本語", "%語", false, Some(true)),
            // Escapes.
            ("a_c", "a\\_c", false, Some(true)),
            ("abc", "a\\_c", false, Some(false)),
            ("100%", "100\\%", false, Some(true)),
            ("1000", "100\\%", false, Some(false)),
            ("a\\b", "a\\\\b", false, Some(true)),
            ("ab", "a\\b", false, Some(true)),
            ("a", "a\\", false, None),
            // Case.
            ("ABC", "abc", false, Some(false)),
            ("ABC", "abc", true, Some(true)),
            ("ÉCOLE", "é%", true, Some(true)),
            ("Order:1", "order:_", true, Some(true)),
        ];
        for &(text, pattern, ci, want) in cases {
            assert_eq!(
                like(text, pattern, ci),
                want,
                "{text:?} LIKE {pattern:?} ci={ci}"
            );
        }
    }

    #[test]
    fn pattern_validity() {
        assert!(valid_pattern("a\\\\"));
        assert!(!valid_pattern("a\\\\\\"));
        assert!(valid_pattern(""));
    }
}
