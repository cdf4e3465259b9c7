//! Glob-style patterns for KEYS and SCAN MATCH, with Redis's semantics
//! (`stringmatchlen` in Redis's util.c): `*` any run of bytes, `?` any one
//! byte, `[abc]`, `[^abc]` and `[a-z]` one byte of (or not of) a set, `\x`
//! the byte `x` itself. The corner cases follow Redis too: an unterminated
//! `[` set takes the rest of the pattern as its members, a reversed range
//! `[z-a]` is the range `[a-z]`, and ranges compare bytes as C's signed
//! `char`, so `[a-\xff]` holds nothing above 0x7f.

/// Patterns nest `*` no deeper than this; a deeper one matches nothing, as in
/// Redis (which bounds it the same way to keep the recursion off the stack's
/// end).
const MAX_STAR_NESTING: usize = 1000;

/// Whether `subject` matches `pattern`.
pub fn matches(pattern: &[u8], subject: &[u8]) -> bool {
    if pattern == b"*" {
        return true;
    }
    let mut skip_longer = false;
    match_from(pattern, subject, &mut skip_longer, 0)
}

/// `skip_longer` is set once a `*` has tried every rest of the subject and
/// failed: every `*` before it would then fail too, so they give up at once
/// rather than retrying shorter prefixes (which would take exponential time).
fn match_from(
    mut pattern: &[u8],
    mut subject: &[u8],
    skip_longer: &mut bool,
    nesting: usize,
) -> bool {
    if nesting > MAX_STAR_NESTING {
        return false;
    }
    while let (Some(&p), Some(&s)) = (pattern.first(), subject.first()) {
        match p {
            b'*' => {
                while pattern.get(1) == Some(&b'*') {
                    pattern = &pattern[1..];
                }
                if pattern.len() == 1 {
                    return true;
                }
                while !subject.is_empty() {
                    if match_from(&pattern[1..], subject, skip_longer, nesting + 1) {
                        return true;
                    }
                    if *skip_longer {
                        return false;
                    }
                    subject = &subject[1..];
                }
                *skip_longer = true;
                return false;
            }
            b'?' => subject = &subject[1..],
            b'[' => {
                let (in_set, last) = set_holds(pattern, s);
                if !in_set {
                    return false;
                }
                subject = &subject[1..];
                // The step below goes past the set's last byte.
                pattern = &pattern[last..];
            }
            b'\\' if pattern.len() >= 2 => {
                if pattern[1] != s {
                    return false;
                }
                pattern = &pattern[1..];
                subject = &subject[1..];
            }
            literal => {
                if literal != s {
                    return false;
                }
                subject = &subject[1..];
            }
        }
        pattern = &pattern[1..];
        if subject.is_empty() {
            while pattern.first() == Some(&b'*') {
                pattern = &pattern[1..];
            }
            break;
        }
    }
    pattern.is_empty() && subject.is_empty()
}

/// Whether byte `s` is in the set that `set` starts with (at its `[`), and
/// where the set's last byte is: its `]`, or the pattern's last byte when the
/// set is not closed.
fn set_holds(set: &[u8], s: u8) -> (bool, usize) {
    let (negated, mut at) = match set.get(1) {
        Some(b'^') => (true, 2),
        _ => (false, 1),
    };
    let mut found = false;
    loop {
        match set.get(at) {
            None => {
                // Unclosed: Redis steps back onto the pattern's last byte.
                at -= 1;
                break;
            }
            Some(b'\\') if at + 1 < set.len() => {
                at += 1;
                found |= set[at] == s;
            }
            Some(b']') => break,
            Some(&start) if at + 2 < set.len() && set[at + 1] == b'-' => {
                let (start, end) = (start as i8, set[at + 2] as i8);
                let (low, high) = if start > end {
                    (end, start)
                } else {
                    (start, end)
                };
                found |= (low..=high).contains(&(s as i8));
                at += 2;
            }
            Some(&member) => found |= member == s,
        }
        at += 1;
    }
    (found != negated, at)
}

#[cfg(test)]
mod tests {
    use super::matches;

    fn m(pattern: &str, subject: &str) -> bool {
        matches(pattern.as_bytes(), subject.as_bytes())
    }

    #[test]
    fn stars_and_question_marks() {
        assert!(m("*", ""));
        assert!(m("*", "anything"));
        assert!(m("user:*", "user:1"));
        assert!(m("user:*", "user:"));
        assert!(!m("user:*", "use"));
        assert!(m("*:1", "user:1"));
        assert!(m("u*r*1", "user:1"));
        assert!(!m("u*r*2", "user:1"));
        assert!(m("h?llo", "hello"));
        assert!(!m("h?llo", "hllo"));
        assert!(m("**a**", "xax"));
        assert!(m("a*", "a"));
        assert!(!m("", "a"));
        assert!(m("", ""));
    }

    #[test]
    fn sets_ranges_and_escapes() {
        assert!(m("h[ae]llo", "hello"));
        assert!(m("h[ae]llo", "hallo"));
        assert!(!m("h[ae]llo", "hillo"));
        assert!(m("h[^e]llo", "hallo"));
        assert!(!m("h[^e]llo", "hello"));
        assert!(m("h[a-b]llo", "hbllo"));
        assert!(
            m("h[b-a]llo", "hbllo"),
            "a reversed range is the same range"
        );
        assert!(!m("h[a-b]llo", "hcllo"));
        assert!(m("h\\*llo", "h*llo"));
        assert!(!m("h\\*llo", "hello"));
        assert!(m("[\\]]", "]"));
        assert!(m("a\\", "a\\"), "a trailing backslash is itself");
    }

    #[test]
    fn unclosed_sets_take_the_rest_of_the_pattern() {
        // As Redis: "[ab" is the set {a, b}, matching one byte.
        assert!(m("[ab", "a"));
        assert!(m("[ab", "b"));
        assert!(!m("[ab", "ab"));
        assert!(!m("[ab", "c"));
        assert!(m("[^", "z"), "an unclosed negated set holds every byte");
        assert!(!m("x[", "x"));
        assert!(!m("[", "["), "a lone [ matches nothing");
    }

    #[test]
    fn ranges_compare_bytes_as_signed_chars() {
        // Redis compares `int`s made from C `char`s: 0xff is -1, below 'a'.
        assert!(!matches(b"[a-\xff]", b"\xfe"));
        assert!(matches(b"[\xff-a]", b"\x00"));
    }

    #[test]
    fn pathological_patterns_finish() {
        let subject = "a".repeat(64);
        let pattern = format!("{}b", "a*".repeat(64));
        assert!(!m(&pattern, &subject));
        let deep = "*a".repeat(2000);
        assert!(
            !m(&deep, &"a".repeat(2000)),
            "nesting beyond 1000 stars matches nothing"
        );
    }
}
