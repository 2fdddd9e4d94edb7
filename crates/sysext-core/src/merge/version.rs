//! systemd's `strverscmp_improved()`: the UAPI version order used to sort extension names.
//!
//! Segments are numeric or alphabetic runs; `~` marks a pre-release (older than anything),
//! `-` separates version and release, `^` marks a patched release and `.` a point release.
//! Characters outside `[A-Za-z0-9~^.-]` are dropped and act as separators.

use std::cmp::Ordering;

fn valid(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'~' | b'-' | b'^' | b'.')
}

/// Compare two version strings (here: extension names) as systemd 252 does.
pub fn strverscmp_improved(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.is_empty() || b.is_empty() {
        return a.cmp(b);
    }
    // Reading past the end yields NUL, like the C string it mirrors.
    let at = |s: &[u8], i: usize| s.get(i).copied().unwrap_or(0);
    let (mut i, mut j) = (0usize, 0usize);
    loop {
        while at(a, i) != 0 && !valid(at(a, i)) {
            i += 1;
        }
        while at(b, j) != 0 && !valid(at(b, j)) {
            j += 1;
        }
        // A separator on one side only decides; on both sides it is passed over.
        let separators = |seps: &[u8], i: &mut usize, j: &mut usize| {
            for &sep in seps {
                if at(a, *i) == sep || at(b, *j) == sep {
                    let r = (at(a, *i) != sep).cmp(&(at(b, *j) != sep));
                    if r != Ordering::Equal {
                        return Some(r);
                    }
                    *i += 1;
                    *j += 1;
                }
            }
            None
        };
        if let Some(r) = separators(b"~", &mut i, &mut j) {
            return r;
        }
        if at(a, i) == 0 || at(b, j) == 0 {
            return at(a, i).cmp(&at(b, j));
        }
        if let Some(r) = separators(b"-^.", &mut i, &mut j) {
            return r;
        }
        let (ii, jj);
        if at(a, i).is_ascii_digit() || at(b, j).is_ascii_digit() {
            while at(a, i) == b'0' {
                i += 1;
            }
            while at(b, j) == b'0' {
                j += 1;
            }
            let mut x = i;
            while at(a, x).is_ascii_digit() {
                x += 1;
            }
            let mut y = j;
            while at(b, y).is_ascii_digit() {
                y += 1;
            }
            let r = (x - i).cmp(&(y - j));
            if r != Ordering::Equal {
                return r;
            }
            let r = a[i..x].cmp(&b[j..y]);
            if r != Ordering::Equal {
                return r;
            }
            (ii, jj) = (x, y);
        } else {
            let mut x = i;
            while at(a, x).is_ascii_alphabetic() {
                x += 1;
            }
            let mut y = j;
            while at(b, y).is_ascii_alphabetic() {
                y += 1;
            }
            let n = (x - i).min(y - j);
            let r = a[i..i + n].cmp(&b[j..j + n]);
            if r != Ordering::Equal {
                return r;
            }
            let r = (x - i).cmp(&(y - j));
            if r != Ordering::Equal {
                return r;
            }
            (ii, jj) = (x, y);
        }
        i = ii;
        j = jj;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_documented_order() {
        // The order from the comment in systemd's string-util-fundamental.c.
        let order = [
            "122.1",
            "123~rc1-1",
            "123",
            "123-a",
            "123-a.1",
            "123-1",
            "123-1.1",
            "123^post1",
            "123.a-1",
            "123.1-1",
            "123a-1",
            "124-1",
        ];
        for w in order.windows(2) {
            assert_eq!(
                strverscmp_improved(w[0], w[1]),
                Ordering::Less,
                "{} < {}",
                w[0],
                w[1]
            );
            assert_eq!(
                strverscmp_improved(w[1], w[0]),
                Ordering::Greater,
                "{} > {}",
                w[1],
                w[0]
            );
        }
    }

    #[test]
    fn table() {
        use Ordering::*;
        for (a, b, want) in [
            ("a", "b", Less),
            ("abc", "abcde", Less),
            ("foo-2", "foo-10", Less),
            ("00123", "123", Equal),
            ("123_a", "123a", Equal),
            ("", "a", Less),
            ("", "", Equal),
            ("1.0", "1.0~rc1", Greater),
            ("tools", "tools-2", Less),
            ("Z", "a", Less),
        ] {
            assert_eq!(strverscmp_improved(a, b), want, "{a} vs {b}");
        }
    }
}
