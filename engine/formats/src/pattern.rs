//! Harbor's repository and tag patterns (replication filters, tag
//! immutability rules), over repository names and tags:
//! `**` any characters, `*` any but `/`, `?` one character but `/`,
//! `{a,b}` one of the alternatives. Used by `berthctl sync` (`--repos`,
//! `--tags`), the server's replication policies and the engine's tag
//! immutability rules.
//!
//! Matching is one pass of a table over (pattern position, text position):
//! time `O(|pattern| × |text|)` per alternative whatever the pattern, and
//! at most [`MAX_ALTERNATIVES`] alternatives; a pattern from a policy
//! cannot make a run backtrack without bound.

/// Most alternatives a pattern's `{…}` groups expand to; beyond, the
/// pattern matches nothing.
pub const MAX_ALTERNATIVES: usize = 256;

/// Whether `s` matches `pattern`.
pub fn glob(pattern: &str, s: &str) -> bool {
    let mut alternatives = Vec::new();
    if !expand(pattern, &mut alternatives) {
        return false;
    }
    let t: Vec<char> = s.chars().collect();
    alternatives.iter().any(|p| {
        let p: Vec<char> = p.chars().collect();
        matches(&p, &t)
    })
}

/// `pattern` with every `{a,b}` group expanded; false past the bound.
fn expand(pattern: &str, out: &mut Vec<String>) -> bool {
    let group = pattern
        .find('{')
        .and_then(|open| pattern[open..].find('}').map(|c| (open, open + c)));
    let Some((open, close)) = group else {
        out.push(pattern.to_owned());
        return out.len() <= MAX_ALTERNATIVES;
    };
    let (head, tail) = (&pattern[..open], &pattern[close + 1..]);
    pattern[open + 1..close]
        .split(',')
        .all(|alt| expand(&format!("{head}{alt}{tail}"), out))
}

#[derive(Clone, Copy, PartialEq)]
enum Token {
    /// `**`
    Deep,
    /// `*`
    Any,
    /// `?`
    One,
    Char(char),
}

fn tokens(p: &[char]) -> Vec<Token> {
    let mut out = Vec::with_capacity(p.len());
    let mut i = 0;
    while i < p.len() {
        out.push(match p[i] {
            '*' if p.get(i + 1) == Some(&'*') => {
                i += 1;
                Token::Deep
            }
            '*' => Token::Any,
            '?' => Token::One,
            c => Token::Char(c),
        });
        i += 1;
    }
    out
}

/// `done[i][j]`: the pattern from token `i` matches the text from `j`;
/// filled from the ends backwards.
fn matches(p: &[char], t: &[char]) -> bool {
    let p = tokens(p);
    let (n, m) = (p.len(), t.len());
    let mut done = vec![vec![false; m + 1]; n + 1];
    done[n][m] = true;
    for i in (0..n).rev() {
        for j in (0..=m).rev() {
            let next = j < m;
            done[i][j] = match p[i] {
                Token::Deep => done[i + 1][j] || (next && done[i][j + 1]),
                Token::Any => done[i + 1][j] || (next && t[j] != '/' && done[i][j + 1]),
                Token::One => next && t[j] != '/' && done[i + 1][j + 1],
                Token::Char(c) => next && t[j] == c && done[i + 1][j + 1],
            };
        }
    }
    done[0][0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_as_harbor_filters_do() {
        assert!(glob("library/*", "library/nginx"));
        assert!(!glob("library/*", "library/a/b"));
        assert!(glob("library/**", "library/a/b"));
        assert!(glob("**", "anything/at/all"));
        assert!(glob("**", ""));
        assert!(glob("v1.?", "v1.2"));
        assert!(!glob("v1.?", "v1.23"));
        assert!(glob("{dev,prod}-*", "prod-7"));
        assert!(!glob("{dev,prod}-*", "test-7"));
        assert!(glob("exact", "exact"));
        assert!(!glob("exact", "exactly"));
        assert!(glob("a/**/z", "a/b/c/z"));
        assert!(!glob("a/*/z", "a/b/c/z"));
        assert!(glob("*", ""));
        assert!(!glob("?", ""));
    }

    #[test]
    fn a_pathological_pattern_is_fast_and_bounded() {
        let p = "*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b";
        let t = "a".repeat(200);
        assert!(!glob(p, &t));
        let many = "{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}";
        assert!(!glob(many, "aaaaaaaaa"), "512 alternatives: past the bound");
        assert!(glob("{a,b}{a,b}", "ba"));
    }
}
