//! Glob-style patterns for KEYS and SCAN MATCH, with Redis's semantics
//! (`stringmatchlen` in Redis's util.c): `*` any run of bytes, `?` any one
//! byte, `[abc]`, `[^abc]` and `[a-z]` one byte of (or not of) a set, `\x`
//! the byte `x` itself. The corner cases follow Redis too: an unterminated
//! `[` set takes the rest of the pattern as its members, a reversed range
//! `[z-a]` is the range `[a-z]`, and ranges compare bytes as C's signed
//! `char`: 0xff is -1, so `[a-\xff]` is the range from 0xff up to `a`,
//! which holds 0xff and 0x00-0x61 but not 0xfe.

/// Patterns nest `*` no deeper than this; a deeper one matches nothing, as in
/// Redis (which bounds it the same way to keep the recursion off the stack's
/// end).
const MAX_STAR_NESTING: usize = 1000;

/// Whether `subject` matches `pattern` with ASCII letters compared without
/// case, as Redis's CONFIG GET compares names.
pub fn matches_nocase(pattern: &[u8], subject: &[u8]) -> bool {
    let mut matcher = Matcher {
        nocase: true,
        skip_longer: false,
        steps: u64::MAX,
    };
    matcher.match_from(pattern, subject, 0)
}

/// Whether `subject` matches `pattern`, bytes compared exactly (KEYS, SCAN),
/// taking the work it does from `steps` (about one step per byte compared);
/// `None` once they run out. A pattern such as `*` followed by
/// thousands of `?` costs its length times the subject's.
pub fn matches_within(pattern: &[u8], subject: &[u8], steps: &mut u64) -> Option<bool> {
    if pattern == b"*" {
        return Some(true);
    }
    let mut matcher = Matcher {
        nocase: false,
        skip_longer: false,
        steps: *steps,
    };
    let found = matcher.match_from(pattern, subject, 0);
    *steps = matcher.steps;
    (matcher.steps > 0).then_some(found)
}

struct Matcher {
    nocase: bool,
    /// Set once a `*` has tried every rest of the subject and failed: every
    /// `*` before it would then fail too, so they give up at once rather than
    /// retrying shorter prefixes (which would take exponential time).
    skip_longer: bool,
    /// Work left; at 0 every call gives up.
    steps: u64,
}

impl Matcher {
    fn step(&mut self, by: usize) -> bool {
        self.steps = self.steps.saturating_sub(by as u64);
        self.steps > 0
    }

    fn same(&self, a: u8, b: u8) -> bool {
        a == b || (self.nocase && a.eq_ignore_ascii_case(&b))
    }

    fn match_from(&mut self, mut pattern: &[u8], mut subject: &[u8], nesting: usize) -> bool {
        if nesting > MAX_STAR_NESTING {
            return false;
        }
        while let (Some(&p), Some(&s)) = (pattern.first(), subject.first()) {
            if !self.step(1) {
                return false;
            }
            match p {
                b'*' => {
                    while pattern.get(1) == Some(&b'*') {
                        pattern = &pattern[1..];
                    }
                    if pattern.len() == 1 {
                        return true;
                    }
                    while !subject.is_empty() {
                        if self.match_from(&pattern[1..], subject, nesting + 1) {
                            return true;
                        }
                        if self.skip_longer || self.steps == 0 {
                            return false;
                        }
                        subject = &subject[1..];
                    }
                    self.skip_longer = true;
                    return false;
                }
                b'?' => subject = &subject[1..],
                b'[' => {
                    let (in_set, last) = self.set_holds(pattern, s);
                    if !self.step(last) || !in_set {
                        return false;
                    }
                    subject = &subject[1..];
                    // The step below goes past the set's last byte.
                    pattern = &pattern[last..];
                }
                b'\\' if pattern.len() >= 2 => {
                    if !self.same(pattern[1], s) {
                        return false;
                    }
                    pattern = &pattern[1..];
                    subject = &subject[1..];
                }
                literal => {
                    if !self.same(literal, s) {
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
    /// where the set's last byte is: its `]`, or the pattern's last byte when
    /// the set is not closed. As in Redis, an escaped member is compared
    /// exactly even without case.
    fn set_holds(&self, set: &[u8], s: u8) -> (bool, usize) {
        let (negated, mut at) = match set.get(1) {
            Some(b'^') => (true, 2),
            _ => (false, 1),
        };
        let lower = |byte: u8| {
            if self.nocase {
                byte.to_ascii_lowercase()
            } else {
                byte
            }
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
                    let (start, end) = (lower(start) as i8, lower(set[at + 2]) as i8);
                    let (low, high) = if start > end {
                        (end, start)
                    } else {
                        (start, end)
                    };
                    found |= (low..=high).contains(&(lower(s) as i8));
                    at += 2;
                }
                Some(&member) => found |= self.same(member, s),
            }
            at += 1;
        }
        (found != negated, at)
    }
}

#[cfg(test)]
mod tests {
    /// Whether `subject` matches `pattern`, bytes compared exactly, with no
    /// bound on the work.
    fn matches(pattern: &[u8], subject: &[u8]) -> bool {
        let mut steps = u64::MAX;
        super::matches_within(pattern, subject, &mut steps) == Some(true)
    }

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
    fn without_case() {
        use super::matches_nocase;
        assert!(matches_nocase(b"HEART*_MS", b"heartbeat_ms"));
        assert!(matches_nocase(b"[A-F]sync", b"fsync"));
        assert!(matches_nocase(b"[F]SYNC", b"fsync"));
        assert!(
            !matches_nocase(b"[\\F]sync", b"fsync"),
            "escaped set members are exact"
        );
        assert!(!m("[A-F]sync", "fsync"));
    }

    #[test]
    fn work_is_bounded_by_the_steps_given() {
        use super::matches_within;
        let subject = "a".repeat(100);
        let costly = format!("*{}b", "?".repeat(90));
        let mut steps = 1_000_000;
        assert_eq!(
            matches_within(costly.as_bytes(), subject.as_bytes(), &mut steps),
            Some(false)
        );
        let used = 1_000_000 - steps;
        assert!(used > 1000, "{used} steps");
        let mut steps = used / 2;
        assert_eq!(
            matches_within(costly.as_bytes(), subject.as_bytes(), &mut steps),
            None
        );
        assert_eq!(steps, 0);
        let mut steps = 50;
        assert_eq!(
            matches_within(b"a*", subject.as_bytes(), &mut steps),
            Some(true)
        );
        let mut steps = 0;
        assert_eq!(matches_within(b"*", b"anything", &mut steps), Some(true));
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
