//! What the shipped scripts and units run: a script's interpreter that is not shipped is
//! warned about, unit `Exec*=` lines follow the programs to where they are shipped, and
//! `--enable` writes an `Upholds=` drop-in for each of the unit's `WantedBy=` targets.

use std::path::{Path, PathBuf};

use safefs::rootfs;
use sysext_core::units;

use super::{Action, Builder, PlanError, Severity};

/// Warns about each script whose interpreter is not shipped.
pub(super) fn check_scripts(b: &mut Builder) {
    let root = b.root;
    let scripts = std::mem::take(&mut b.scripts);
    for (src, interp, arg) in scripts {
        let wanted = if interp.ends_with("/env") {
            arg.map(|a| format!("/usr/bin/{a}"))
        } else {
            Some(interp.clone())
        };
        let Some(wanted) = wanted else { continue };
        let inside = rootfs::resolve(root, Path::new(&wanted), true).ok();
        let shipped = inside
            .as_ref()
            .and_then(|p| b.translate(p))
            .or_else(|| b.translate(Path::new(&wanted)));
        if shipped.is_none() {
            let in_image = inside.is_some_and(|p| b.host(&p).is_file());
            b.note(
                Severity::Warning,
                format!(
                    "script {} runs {wanted}, which is {}; the host's {wanted} will run it, if there is one",
                    src.display(),
                    if in_image { "not among the entries" } else { "not in the image" }
                ),
                Some(format!("add {wanted} (and its resource folders) as a PATH")),
            );
        }
    }
}

/// Rewrites the units' `Exec*=` lines to the shipped paths; returns (file name, original
/// text) of each unit.
pub(super) fn rewrite_units(b: &mut Builder) -> Vec<(String, String)> {
    let units = std::mem::take(&mut b.units);
    let mut unit_names = Vec::new();
    for (i, src) in &units {
        let (to, text) = match &b.actions[*i] {
            Action::Write { to, contents, .. } => (to.clone(), contents.clone()),
            _ => continue,
        };
        let new_text = rewrite_exec_lines(b, src, &text);
        if let Action::Write { contents, .. } = &mut b.actions[*i] {
            *contents = new_text;
        }
        unit_names.push((
            to.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
            text,
        ));
    }
    unit_names
}

/// `text` with each `Exec*=` command path that is shipped elsewhere replaced, with a note
/// for each change and a warning for each program the extension does not ship.
fn rewrite_exec_lines(b: &mut Builder, src: &str, text: &str) -> String {
    let root = b.root;
    let mut new_text = text.to_string();
    for p in units::exec_paths(text) {
        let inside =
            rootfs::resolve(root, Path::new(&p), false).unwrap_or_else(|_| PathBuf::from(&p));
        match b.translate(&inside) {
            Some(t) => {
                let shipped = format!("/{}", t.display());
                if shipped != p {
                    // Escaped for the unit line; a path no unit line can hold is left alone.
                    let line_path = match gentext::unit_path("path", &shipped) {
                        Ok(l) => l,
                        Err(e) => {
                            b.note(
                                Severity::Warning,
                                format!("unit {src}: {p} is shipped as {shipped:?}, which cannot be written into the unit: {e}"),
                                Some("ship the program under a plain name with SRC:/usr/bin/NAME".into()),
                            );
                            continue;
                        }
                    };
                    new_text = replace_exec(&new_text, &p, &line_path);
                    b.note(
                        Severity::Note,
                        format!(
                            "unit {src}: {p} is shipped as {shipped}; the unit is changed to match"
                        ),
                        None,
                    );
                }
            }
            None => b.note(
                Severity::Warning,
                format!(
                    "unit {src} runs {p}, which is not in the extension; the host must provide it"
                ),
                Some(format!("add {p} as a PATH if it comes from the image")),
            ),
        }
    }
    new_text
}

/// Writes an `Upholds=` drop-in for each unit in `enable` (by file name) and each of its
/// `WantedBy=` targets (default `multi-user.target`).
pub(super) fn enable(
    b: &mut Builder,
    enable: &[String],
    unit_names: &[(String, String)],
) -> Result<(), PlanError> {
    let name = b.name.clone();
    for en in enable {
        let Some((unit, text)) = unit_names.iter().find(|(n, _)| n == en) else {
            return Err(PlanError::EnableUnknown(en.clone()));
        };
        let mut targets = units::wanted_by(text);
        if targets.is_empty() {
            targets.push("multi-user.target".into());
        }
        let unit_line = gentext::unit_word("unit name", unit).map_err(PlanError::UnitText)?;
        for t in targets {
            let dir = Path::new("usr/lib/systemd/system").join(format!("{t}.d"));
            b.parents(&dir.join("x"))?;
            b.push(Action::Write {
                to: dir.join(format!("10-{name}-{unit}.conf")),
                contents: format!(
                    "# Written by flix: start {unit_line} with the extension.\n[Unit]\nUpholds={unit_line}\n"
                ),
                mode: 0o644,
            })?;
        }
    }
    Ok(())
}

/// Replaces the command path `from` by `to` on `Exec*=` lines.
fn replace_exec(text: &str, from: &str, to: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let t = line.trim_start();
        if t.starts_with("Exec") {
            if let Some((k, v)) = line.split_once('=') {
                let v2 = replace_word(v, from, to);
                out.push_str(k);
                out.push('=');
                out.push_str(&v2);
                continue;
            }
        }
        out.push_str(line);
    }
    out
}

fn replace_word(v: &str, from: &str, to: &str) -> String {
    let prefix_len = v.len() - v.trim_start_matches([' ', '-', '@', ':', '+', '!']).len();
    let (prefix, rest) = v.split_at(prefix_len);
    match rest.strip_prefix(from) {
        Some(tail) if tail.is_empty() || tail.starts_with(char::is_whitespace) => {
            format!("{prefix}{to}{tail}")
        }
        _ => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_lines() {
        let u = "[Service]\nExecStartPre=-/usr/sbin/nginx -t\nExecStart=/usr/sbin/nginx\nExecReload=@/bin/kill kill -HUP $MAINPID\nExecStop=true\n[Install]\nWantedBy=multi-user.target graphical.target\n";
        let r = replace_exec(u, "/usr/sbin/nginx", "/usr/bin/nginx");
        assert!(r.contains("ExecStartPre=-/usr/bin/nginx -t\n"));
        assert!(r.contains("ExecStart=/usr/bin/nginx\n"));
        assert!(r.contains("@/bin/kill"));
        assert_eq!(
            replace_word("/usr/sbin/nginxx", "/usr/sbin/nginx", "/a"),
            "/usr/sbin/nginxx"
        );
    }
}
