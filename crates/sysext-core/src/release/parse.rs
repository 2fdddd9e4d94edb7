//! os-release syntax, parsed as systemd's env-file parser does.

use std::path::Path;

use serde::Serialize;

use super::{read_release_file, ReleaseError};

/// A parsed os-release / extension-release file: ordered key/value pairs, each key once
/// (a later duplicate replaces the earlier value in place, as systemd's pair loader does).
/// Serialises as a JSON object in file order. Lookups go through an index, so parsing is
/// linear in the number of lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OsRelease {
    pairs: Vec<(String, String)>,
    /// Key → position in `pairs`.
    index: std::collections::HashMap<String, usize>,
}

impl Serialize for OsRelease {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.pairs.iter().map(|(k, v)| (k, v)))
    }
}

pub(super) const WHITESPACE: &[char] = &[' ', '\t', '\n', '\r'];
const NEWLINE: &[char] = &['\n', '\r'];
const COMMENTS: &[char] = &['#', ';'];
pub(super) const SHELL_NEED_ESCAPE: &[char] = &['"', '\\', '`', '$'];

impl OsRelease {
    /// Parses os-release syntax exactly as systemd's env-file parser does (v254+ semantics:
    /// a comment ending in a backslash does not swallow the next line). Never fails: lines
    /// without `=` are ignored, and parsing stops at a NUL character as it does in C.
    pub fn parse(text: &str) -> OsRelease {
        #[derive(Clone, Copy, PartialEq)]
        enum State {
            PreKey,
            Key,
            PreValue,
            Value,
            ValueEscape,
            SingleQuote,
            DoubleQuote,
            DoubleQuoteEscape,
            Comment,
            CommentEscape,
        }
        let text = text.split('\0').next().unwrap_or("");
        let mut out = OsRelease::default();
        let mut state = State::PreKey;
        let mut key = String::new();
        let mut value = String::new();
        // Byte offsets where trailing whitespace starts, if the key/value currently ends in it.
        let mut key_ws: Option<usize> = None;
        let mut value_ws: Option<usize> = None;

        for c in text.chars() {
            match state {
                State::PreKey => {
                    if COMMENTS.contains(&c) {
                        state = State::Comment;
                    } else if !WHITESPACE.contains(&c) {
                        state = State::Key;
                        key_ws = None;
                        key.push(c);
                    }
                }
                State::Key => {
                    if NEWLINE.contains(&c) {
                        state = State::PreKey;
                        key.clear();
                    } else if c == '=' {
                        state = State::PreValue;
                        value_ws = None;
                    } else {
                        if !WHITESPACE.contains(&c) {
                            key_ws = None;
                        } else if key_ws.is_none() {
                            key_ws = Some(key.len());
                        }
                        key.push(c);
                    }
                }
                State::PreValue => {
                    if NEWLINE.contains(&c) {
                        state = State::PreKey;
                        out.push(&mut key, key_ws, &mut value, None);
                    } else if c == '\'' {
                        state = State::SingleQuote;
                    } else if c == '"' {
                        state = State::DoubleQuote;
                    } else if c == '\\' {
                        state = State::ValueEscape;
                    } else if !WHITESPACE.contains(&c) {
                        state = State::Value;
                        value.push(c);
                    }
                }
                State::Value => {
                    if NEWLINE.contains(&c) {
                        state = State::PreKey;
                        out.push(&mut key, key_ws, &mut value, value_ws);
                    } else if c == '\\' {
                        state = State::ValueEscape;
                        value_ws = None;
                    } else {
                        if !WHITESPACE.contains(&c) {
                            value_ws = None;
                        } else if value_ws.is_none() {
                            value_ws = Some(value.len());
                        }
                        value.push(c);
                    }
                }
                State::ValueEscape => {
                    state = State::Value;
                    // An escaped newline is a line continuation and vanishes.
                    if !NEWLINE.contains(&c) {
                        value.push(c);
                    }
                }
                State::SingleQuote => {
                    if c == '\'' {
                        state = State::PreValue;
                    } else {
                        value.push(c);
                    }
                }
                State::DoubleQuote => {
                    if c == '"' {
                        state = State::PreValue;
                    } else if c == '\\' {
                        state = State::DoubleQuoteEscape;
                    } else {
                        value.push(c);
                    }
                }
                State::DoubleQuoteEscape => {
                    state = State::DoubleQuote;
                    if SHELL_NEED_ESCAPE.contains(&c) {
                        value.push(c);
                    } else if c != '\n' {
                        // Like the shell: other escapes keep their backslash.
                        value.push('\\');
                        value.push(c);
                    }
                }
                State::Comment => {
                    if c == '\\' {
                        state = State::CommentEscape;
                    } else if NEWLINE.contains(&c) {
                        state = State::PreKey;
                    }
                }
                State::CommentEscape => {
                    state = if NEWLINE.contains(&c) {
                        State::PreKey
                    } else {
                        State::Comment
                    };
                }
            }
        }
        match state {
            State::Value => out.push(&mut key, key_ws, &mut value, value_ws),
            State::PreValue
            | State::ValueEscape
            | State::SingleQuote
            | State::DoubleQuote
            | State::DoubleQuoteEscape => out.push(&mut key, key_ws, &mut value, None),
            _ => {}
        }
        out
    }

    fn push(
        &mut self,
        key: &mut String,
        key_ws: Option<usize>,
        value: &mut String,
        value_ws: Option<usize>,
    ) {
        if let Some(at) = key_ws {
            key.truncate(at);
        }
        if let Some(at) = value_ws {
            value.truncate(at);
        }
        let k = std::mem::take(key);
        let v = std::mem::take(value);
        match self.index.get(&k) {
            Some(&i) => self.pairs[i].1 = v,
            None => {
                self.index.insert(k.clone(), self.pairs.len());
                self.pairs.push((k, v));
            }
        }
    }

    /// Reads and parses a release file ([`read_release_file`]: regular files only, at most
    /// [`MAX_RELEASE_BYTES`](super::MAX_RELEASE_BYTES)). Invalid UTF-8 is an error, as in systemd (which then treats
    /// the file as unreadable).
    pub fn read(path: &Path) -> Result<OsRelease, ReleaseError> {
        let bytes = read_release_file(path)?;
        Self::from_bytes(&bytes).ok_or_else(|| ReleaseError::InvalidUtf8 {
            path: path.to_path_buf(),
        })
    }

    /// Parses raw file contents; `None` when they are not UTF-8 (before a NUL byte).
    pub fn from_bytes(bytes: &[u8]) -> Option<OsRelease> {
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        std::str::from_utf8(&bytes[..end]).ok().map(Self::parse)
    }

    /// The value of `key`, if set (possibly empty).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.index.get(key).map(|&i| self.pairs[i].1.as_str())
    }

    /// True when the file holds no assignment at all (systemd ignores such an extension).
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The key/value pairs in file order (first appearance of each key).
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The value of `key` when set and non-empty (systemd's `isempty()` treats both alike).
    pub(super) fn non_empty(&self, key: &str) -> Option<&str> {
        self.get(key).filter(|v| !v.is_empty())
    }
}
