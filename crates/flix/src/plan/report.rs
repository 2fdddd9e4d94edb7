//! What the plan tells the user and writes last: data paths the shipped objects mention but
//! the entries leave out, and the extension-release file.

use std::path::{Path, PathBuf};

use safefs::rootfs;
use sysext_core::release::{self, ExtensionRelease};

use super::{Action, Builder, PlanError, PlanOptions, Severity};

/// The data paths `objects` mention that are in the rootfs but not shipped, with a note
/// listing the first ten.
pub(super) fn suggest_data_paths(
    b: &mut Builder,
    objects: &[PathBuf],
) -> Vec<crate::data_paths::DataPath> {
    let suggestions = {
        let shipped = |p: &Path| {
            let real = rootfs::resolve(b.root, p, true).unwrap_or_else(|_| p.to_path_buf());
            b.translate(p).is_some()
                || b.translate(&real).is_some()
                || b.mapping
                    .iter()
                    .any(|(src, _)| src.starts_with(p) || src.starts_with(&real))
        };
        crate::data_paths::suggestions(b.root, objects, shipped)
    };
    if !suggestions.is_empty() {
        let list: Vec<String> = suggestions
            .iter()
            .take(10)
            .map(|s| {
                format!(
                    "{} ({}, in {})",
                    s.path.display(),
                    s.kind,
                    s.mentioned_by
                        .iter()
                        .map(|m| m.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
            .collect();
        let more = suggestions.len().saturating_sub(10);
        b.note(
            Severity::Note,
            format!(
                "the shipped programs mention paths that are in the rootfs but not shipped: {}{}",
                list.join("; "),
                if more > 0 {
                    format!("; and {more} more (--json lists them)")
                } else {
                    String::new()
                }
            ),
            Some(
                "add the ones the programs need as entries (SRC:/usr/TARGET for paths outside \
                 /usr)"
                    .into(),
            ),
        );
    }
    suggestions
}

/// Writes the extension-release file; returns its text.
pub(super) fn write_release(
    b: &mut Builder,
    opts: &PlanOptions,
    arch: Option<String>,
    reload_manager: bool,
) -> Result<String, PlanError> {
    let release = ExtensionRelease {
        id: opts.os.clone().unwrap_or_else(|| "_any".into()),
        version_id: opts.version_id.clone(),
        sysext_level: opts.sysext_level.clone(),
        architecture: arch.filter(|a| !a.starts_with("machine ")),
        reload_manager,
        ..Default::default()
    };
    let rel_path = release::release_file_path(&b.name);
    b.parents(&rel_path)?;
    let release_text = release.render();
    b.push(Action::Write {
        to: rel_path,
        contents: release_text.clone(),
        mode: 0o644,
    })?;
    Ok(release_text)
}
