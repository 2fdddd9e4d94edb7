//! Which names systemd accepts for an extension image, and the stricter rule for ours.

use super::ReleaseError;

/// The longest name whose release file name (`extension-release.NAME`) still fits NAME_MAX.
pub const MAX_NAME_LEN: usize = 255 - "extension-release.".len();

/// Checks that systemd accepts `name` as an extension image name (systemd's
/// `image_name_is_valid`: a valid file name without control characters, not a temporary
/// `.#` file) and that its release file name fits. Returns warnings for legal names that
/// invite trouble: `_` and `+` (systemd 257 cuts names there when matching release files).
pub fn validate_name(name: &str) -> Result<Vec<String>, ReleaseError> {
    let err = |reason: &str| {
        Err(ReleaseError::InvalidName {
            name: name.to_string(),
            reason: reason.to_string(),
        })
    };
    if name.is_empty() {
        return err("the name is empty");
    }
    if name == "." || name == ".." {
        return err("'.' and '..' are not names");
    }
    if name.contains('/') {
        return err("a name cannot contain '/'");
    }
    if name.chars().any(|c| c.is_control()) {
        return err("a name cannot contain control characters");
    }
    if name.len() > MAX_NAME_LEN {
        return err(&format!(
            "the name is {} bytes long; at most {MAX_NAME_LEN} fit in extension-release.NAME",
            name.len()
        ));
    }
    if name.starts_with(".#") {
        return err("systemd ignores '.#' names (temporary files)");
    }
    if name.ends_with(".raw") {
        return err("the image name is the file name without '.raw'; drop the suffix");
    }
    let mut warnings = Vec::new();
    if name.starts_with('.') {
        warnings.push(format!(
            "name {name:?} starts with '.': the image file is hidden from ls and most tools"
        ));
    }
    for (c, what) in [('_', "underscore"), ('+', "plus sign")] {
        if name.contains(c) {
            warnings.push(format!(
                "name {name:?} contains {what} '{c}': systemd 257+ cuts image names at the first '_' or '+' when matching release files; avoid it"
            ));
        }
    }
    Ok(warnings)
}

/// The characters besides ASCII letters and digits a new image's name may hold: plain in file
/// names, sh words, `PATH` and ELF `RUNPATH` lists and URLs; `%` is escaped wherever it goes
/// into a unit or transfer file ([`gentext`]).
pub const NEW_NAME_PUNCTUATION: &str = "-_.+@%";

/// The rule for the name of an image we produce (flix, flatwrap, `sysext pack`, bake's manifest
/// names, convert-torcx), checked before any work starts: a name systemd accepts
/// ([`validate_name`]), not hidden (a leading `.`: the image would be invisible to `ls`, and a
/// `.#` name is ignored by systemd), and made of ASCII letters, digits and
/// [`NEW_NAME_PUNCTUATION`] (a `:` would split `/usr/local/NAME` in a `RUNPATH`, a `$` start a
/// loader token, a quote or blank end a word). Returns [`validate_name`]'s warnings.
pub fn validate_new_name(name: &str) -> Result<Vec<String>, ReleaseError> {
    let warnings = validate_name(name)?;
    let err = |reason: String| {
        Err(ReleaseError::InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    if name.starts_with('.') {
        return err(
            "a name starting with '.' makes a hidden image; drop the leading '.'".to_string(),
        );
    }
    if let Some(c) = name
        .chars()
        .find(|c| !c.is_ascii_alphanumeric() && !NEW_NAME_PUNCTUATION.contains(*c))
    {
        return err(format!(
            "{c:?} is not allowed; use only letters, digits and {}",
            NEW_NAME_PUNCTUATION
                .chars()
                .map(String::from)
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    Ok(warnings
        .into_iter()
        .filter(|w| !w.contains("starts with '.'"))
        .collect())
}
