//! Values from input substituted into generated text: POSIX sh scripts (flatwrap's launchers)
//! and systemd unit-style files (units, drop-ins, sysupdate transfer files).
//!
//! Every generator quotes through this module, never with its own `format!` rules:
//! - [`sh_quote`]: the one single-quote escaper for sh.
//! - [`unit_escape`]: `%` doubled, so a value reaches a unit line as itself, not as a
//!   specifier (`%h` would be the home directory).
//! - [`BaseUrl`]: the folder URL written into transfer files and Butane configs, parsed
//!   strictly.
//! - [`escape`]: text from input in human output (terminal-safe).
//! - [`check_text`], [`unit_path`], [`unit_word`]: values refused before any text is made
//!   (control characters end lines and hide text; relative or blank-holding paths split
//!   `Exec*=` lines).

use std::borrow::Cow;

/// Why a value cannot be substituted into generated text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("{what} {value:?} contains a control character (e.g. a newline); rename it")]
    Control { what: String, value: String },
    #[error("{what} {value:?} is not an absolute path")]
    NotAbsolute { what: String, value: String },
    #[error("{what} {value:?} contains a blank; unit lines split words at blanks")]
    Blank { what: String, value: String },
    #[error("{what} is empty")]
    Empty { what: String },
    #[error("base URL {url:?}: {reason}; give the folder the images are served from, e.g. https://example.org/extensions")]
    BaseUrl { url: String, reason: String },
}

/// Quotes `s` for POSIX sh: single quotes, each `'` written as `'\''`. The result is one word
/// whose value is exactly `s`, whatever `s` holds (`$`, backquotes, blanks, `*`, newlines).
pub fn sh_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push_str(r"'\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// Escapes `%` as `%%` for a value on a line of a unit, drop-in or sysupdate transfer file,
/// where `%` starts a specifier.
pub fn unit_escape(s: &str) -> String {
    s.replace('%', "%%")
}

/// Whether `s` holds a control character (newline, tab, escape, DEL, C1 controls...).
pub fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// Refuses `value` when it holds a control character; `what` names it in the error.
pub fn check_text(what: &str, value: &str) -> Result<(), TextError> {
    if has_control(value) {
        return Err(TextError::Control {
            what: what.to_string(),
            value: value.to_string(),
        });
    }
    Ok(())
}

/// A word of a unit line (a unit name, an image name): not empty, no control characters, no
/// blanks; returned with `%` escaped.
pub fn unit_word(what: &str, value: &str) -> Result<String, TextError> {
    if value.is_empty() {
        return Err(TextError::Empty {
            what: what.to_string(),
        });
    }
    check_text(what, value)?;
    if value.chars().any(char::is_whitespace) {
        return Err(TextError::Blank {
            what: what.to_string(),
            value: value.to_string(),
        });
    }
    Ok(unit_escape(value))
}

/// A path on a unit line: absolute, no control characters, no blanks; returned with `%`
/// escaped.
pub fn unit_path(what: &str, value: &str) -> Result<String, TextError> {
    if !value.starts_with('/') {
        return Err(TextError::NotAbsolute {
            what: what.to_string(),
            value: value.to_string(),
        });
    }
    unit_word(what, value)
}

/// `s` for human output: control characters (C0, DEL, C1), bidirectional-text controls and
/// backslashes escaped (`\n`, `\t`, `\r`, `\\`, `\xNN`, `\u{NNNN}`), so text from an image
/// cannot move the cursor, clear the screen or fake lines. JSON output needs no such step.
pub fn escape(s: &str) -> Cow<'_, str> {
    let bad = |c: char| {
        c.is_control()
            || c == '\\'
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !s.chars().any(bad) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\\' => out.push_str("\\\\"),
            c if bad(c) && (c as u32) < 0x100 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if bad(c) => out.push_str(&format!("\\u{{{:04x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A validated base URL: the folder the images are served from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl(url::Url);

impl BaseUrl {
    /// Parses `text` strictly: the `url` crate drops tabs and newlines and trims blanks, so
    /// those are refused before parsing.
    pub fn parse(text: &str) -> Result<BaseUrl, TextError> {
        let bad = |reason: &str| TextError::BaseUrl {
            url: text.to_string(),
            reason: reason.to_string(),
        };
        if text.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(bad(
                "it contains a blank or a control character (e.g. a newline)",
            ));
        }
        let url = url::Url::parse(text).map_err(|e| bad(&format!("not a URL ({e})")))?;
        match url.scheme() {
            "http" | "https" => {
                if url.host_str().is_none_or(str::is_empty) {
                    return Err(bad("it has no host"));
                }
            }
            "file" => {}
            s => return Err(bad(&format!("scheme {s:?} is not http, https or file"))),
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("a folder URL takes no query (?) or fragment (#)"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("credentials do not belong in a transfer file"));
        }
        if url.cannot_be_a_base() {
            return Err(bad("it cannot hold file names"));
        }
        Ok(BaseUrl(url))
    }

    /// The folder URL without a trailing `/` (as systemd-sysupdate's `Path=` takes it).
    pub fn folder(&self) -> String {
        self.0.as_str().trim_end_matches('/').to_string()
    }

    /// The URL of the file `name` in the folder (`name` percent-encoded as one segment).
    pub fn file(&self, name: &str) -> String {
        let mut u = self.0.clone();
        if let Ok(mut seg) = u.path_segments_mut() {
            seg.pop_if_empty().push(name);
        }
        u.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What sh makes of a quoted word: run `printf %s WORD` for real.
    fn sh_value(word: &str) -> Vec<u8> {
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("printf %s {word}"))
            .current_dir(std::env::temp_dir())
            .output()
            .unwrap();
        assert!(out.status.success(), "{word}");
        out.stdout
    }

    #[test]
    fn sh_quote_gives_the_value_back() {
        let cases = [
            "",
            "a b",
            "it's",
            "''",
            "x$(touch /nonexistent-marker)",
            "x`id`",
            "a b*",
            "$HOME ${x-y} \\ \" ; | & < > ( ) { } [ ] ~ # !",
            "line\nbreak",
            "é ünïcode",
        ];
        for c in cases {
            assert_eq!(sh_value(&sh_quote(c)), c.as_bytes(), "{c:?}");
        }
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        assert_eq!(sh_quote(""), "''");
    }

    #[test]
    fn unit_values() {
        assert_eq!(unit_escape("a%hb%%"), "a%%hb%%%%");
        assert_eq!(unit_word("unit", "x%h.service").unwrap(), "x%%h.service");
        assert_eq!(unit_path("path", "/usr/bin/a%i").unwrap(), "/usr/bin/a%%i");
        let bad = [
            ("rel/x", "not an absolute path"),
            ("/a\nb", "control character"),
            ("/a\u{1b}[2Jb", "control character"),
            ("/a b", "blank"),
            ("/a\u{85}b", "control character"),
        ];
        for (v, want) in bad {
            let e = unit_path("path", v).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains("path"), "{v:?}: {e}");
        }
        assert!(unit_word("unit", "").is_err());
        assert!(check_text("name", "ok name").is_ok());
        assert!(check_text("name", "bad\rname").is_err());
    }

    #[test]
    fn escape_table() {
        for (input, want) in [
            ("plain/path-1.2", "plain/path-1.2"),
            ("new\nline", "new\\nline"),
            ("tab\tcr\r", "tab\\tcr\\r"),
            ("esc\x1b[2J", "esc\\x1b[2J"),
            ("del\x7f", "del\\x7f"),
            ("c1\u{9b}", "c1\\x9b"),
            ("back\\slash", "back\\\\slash"),
            ("rtl\u{202e}txt", "rtl\\u{202e}txt"),
            ("ünïcode ✓", "ünïcode ✓"),
        ] {
            assert_eq!(escape(input), want, "{input:?}");
            assert!(!escape(input).chars().any(|c| c.is_control()));
        }
        assert!(matches!(escape("ok"), std::borrow::Cow::Borrowed(_)));
    }
}
