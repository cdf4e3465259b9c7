//! The config file's syntax: `key = value` lines, comments, unknown and
//! duplicate keys. Apart from the value checks so that the syntax can be
//! read (and tested on strings) without them.

use super::{key_def, ConfigError};

/// Splits a config file's text into `(key, value, line)` triples, line numbers
/// counting from 1. `#` starts a comment anywhere on a line (so a value cannot
/// contain one); blank lines are skipped; keys and values are trimmed. Unknown and
/// duplicate keys are errors here; values are checked by [`resolve`](fn@super::resolve).
pub fn parse(text: &str, file_name: &str) -> Result<Vec<(String, String, usize)>, ConfigError> {
    let mut settings: Vec<(String, String, usize)> = Vec::new();
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (number, raw) in text.lines().enumerate() {
        let line = number + 1;
        let content = raw.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        let Some((key, value)) = content.split_once('=') else {
            // Name the key, as every other error here does: a line like
            // `colour red` is an unknown key, `fsync always` a known key
            // missing its `=`.
            let word = content.split_whitespace().next().unwrap_or(content);
            return Err(ConfigError(if key_def(word).is_none() {
                format!("{file_name}:{line}: unknown key '{word}'")
            } else {
                format!("{file_name}:{line}: expected '{word} = value'")
            }));
        };
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty() {
            return Err(ConfigError(format!(
                "{file_name}:{line}: expected 'key = value'"
            )));
        }
        if key_def(key).is_none() {
            return Err(ConfigError(format!(
                "{file_name}:{line}: unknown key '{key}'"
            )));
        }
        if settings.iter().any(|(seen, _, _)| seen == key) {
            return Err(ConfigError(format!(
                "{file_name}:{line}: duplicate key '{key}'"
            )));
        }
        settings.push((key.to_string(), value.to_string(), line));
    }
    Ok(settings)
}

/// The `(key, value, line)` settings of the config file at `path`, as
/// [`parse`] gives them; values are not checked yet.
pub fn read_file(path: &std::path::Path) -> Result<Vec<(String, String, usize)>, ConfigError> {
    let file_name = path.display().to_string();
    let bytes = std::fs::read(path)
        .map_err(|err| ConfigError(format!("{file_name}: cannot read config file: {err}")))?;
    let text = String::from_utf8(bytes).map_err(|err| {
        let valid = &err.as_bytes()[..err.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
        ConfigError(format!("{file_name}:{line}: not valid UTF-8"))
    })?;
    parse(&text, &file_name)
}
