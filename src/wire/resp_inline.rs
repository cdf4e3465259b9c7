//! Splitting an inline request line into words, quotes and escapes as Redis
//! `sdssplitargs` does. Apart from the parser's state machine, which only
//! finds the line and hands it here.

use super::Argv;

/// Splits an inline line into words as Redis `sdssplitargs`: words separated by
/// whitespace; `"..."` with `\n \r \t \b \a \\ \" \xHH` escapes; `'...'` with
/// `\'`; a quote may start inside a word, and a closing quote must be followed
/// by whitespace or the end. The words are appended to `words`, in buffers
/// taken from `spare` where it has any; `false` means unbalanced quotes.
pub(super) fn split_inline(line: &[u8], words: &mut Argv, spare: &mut Vec<Vec<u8>>) -> bool {
    let mut i = 0;
    loop {
        while i < line.len() && is_space(line[i]) {
            i += 1;
        }
        if i == line.len() {
            return true;
        }
        let run = line[i..]
            .iter()
            .position(|&b| matches!(b, b' ' | b'\n' | b'\r' | b'\t' | b'"' | b'\''))
            .unwrap_or(line.len() - i);
        let mut word = spare.pop().unwrap_or_default();
        word.extend_from_slice(&line[i..i + run]);
        i += run;
        if let Some(&quote) = line.get(i).filter(|&&b| b == b'"' || b == b'\'') {
            match split_quoted(line, i + 1, quote, &mut word) {
                Some(next) => i = next,
                None => return false,
            }
        }
        words.push(word);
    }
}

/// Appends the quoted part starting at `i` (after the opening `quote`) to
/// `word`; returns the offset after the closing quote.
fn split_quoted(line: &[u8], mut i: usize, quote: u8, word: &mut Vec<u8>) -> Option<usize> {
    loop {
        let run = line[i..]
            .iter()
            .position(|&b| b == quote || b == b'\\')
            .unwrap_or(line.len() - i);
        word.extend_from_slice(&line[i..i + run]);
        i += run;
        let next = line.get(i + 1).copied();
        match line.get(i) {
            None => return None,
            Some(&c) if c == quote => {
                return match next {
                    Some(after) if !is_space(after) => None,
                    _ => Some(i + 1),
                };
            }
            // A backslash.
            Some(_) if quote == b'\'' => {
                let escaped_quote = next == Some(b'\'');
                word.push(if escaped_quote { b'\'' } else { b'\\' });
                i += if escaped_quote { 2 } else { 1 };
            }
            Some(_) => {
                let hex_byte = match (line.get(i + 2).and_then(hex), line.get(i + 3).and_then(hex))
                {
                    (Some(hi), Some(lo)) if next == Some(b'x') => Some(hi << 4 | lo),
                    _ => None,
                };
                match (hex_byte, next) {
                    (Some(byte), _) => {
                        word.push(byte);
                        i += 4;
                    }
                    (None, Some(escaped)) => {
                        word.push(unescape(escaped));
                        i += 2;
                    }
                    // A backslash ending the line; the missing quote fails next round.
                    (None, None) => {
                        word.push(b'\\');
                        i += 1;
                    }
                }
            }
        }
    }
}

fn unescape(byte: u8) -> u8 {
    match byte {
        b'n' => b'\n',
        b'r' => b'\r',
        b't' => b'\t',
        b'b' => 0x08,
        b'a' => 0x07,
        other => other,
    }
}

/// C `isspace`.
fn is_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn hex(byte: &u8) -> Option<u8> {
    (*byte as char).to_digit(16).map(|d| d as u8)
}
