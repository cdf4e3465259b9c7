//! A command's answer, independent of how it is put on the wire.

/// One reply value. `wire::resp` turns it into RESP2 or RESP3 bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`
    Ok,
    /// `+<text>`
    Status(String),
    /// `-<text>`; the text starts with the error code (`ERR`, `TRYAGAIN`, ...).
    Error(String),
    Integer(i64),
    Bulk(Vec<u8>),
    /// `$-1` in RESP2, `_` in RESP3.
    Nil,
    Array(Vec<Reply>),
    /// A flat array of alternating keys and values in RESP2, `%` in RESP3.
    Map(Vec<(Reply, Reply)>),
}

impl Reply {
    pub fn error(text: impl Into<String>) -> Reply {
        Reply::Error(text.into())
    }
}

/// A client's word as Redis echoes it in an error: Redis formats it as a C
/// string, which ends at its first NUL byte.
pub fn up_to_nul(word: &[u8]) -> &[u8] {
    word.split(|&byte| byte == 0).next().unwrap_or_default()
}
