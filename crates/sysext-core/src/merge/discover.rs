//! Discovery: the images systemd-sysext would take from its search path inside a root, the
//! first found under a name winning.

use super::*;

/// systemd 252's `image_name_is_valid()`, the predicate of its discovery. Deliberately laxer
/// than [`release::validate_name`] (which also lints names we produce: the release file
/// name's length, a `.raw` suffix), so discovery takes exactly the images systemd takes.
pub(super) fn image_name_is_valid(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.chars().any(|c| c.is_control())
        && !name.starts_with(".#")
}

/// The images in a root's extension directories, in systemd's discovery order, masked by name
/// within a class: the sysexts of [`SEARCH_PATH`], then the confexts of
/// [`ImageClass::search_path`].
pub fn discover(root: &Path) -> Result<Vec<Candidate>, MergeError> {
    let mut out = discover_class(root, ImageClass::Sysext)?;
    out.extend(discover_class(root, ImageClass::Confext)?);
    Ok(out)
}

fn discover_class(root: &Path, class: ImageClass) -> Result<Vec<Candidate>, MergeError> {
    let follow = is_host_root(root);
    let mut out: Vec<Candidate> = Vec::new();
    let search: &[&str] = match class {
        ImageClass::Sysext => &SEARCH_PATH,
        ImageClass::Confext => class.search_path(),
    };
    for dir in search {
        let Some(resolved) = chase(root, dir)? else {
            continue;
        };
        let rd = match fs::read_dir(&resolved) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => continue,
            Err(e) => return Err(io_err("reading extension directory", &resolved)(e)),
        };
        // readdir order, as systemd: it only matters for `NAME` beside `NAME.raw`.
        for de in rd {
            let de = de.map_err(io_err("reading extension directory", &resolved))?;
            let fname = de.file_name();
            let Some(fname) = fname.to_str() else {
                continue;
            };
            let path = resolved.join(fname);
            let md = if follow {
                fs::metadata(&path)
            } else {
                fs::symlink_metadata(&path)
            };
            let Ok(md) = md else { continue };
            let (name, directory) = if md.is_file() {
                match class.image_name(fname) {
                    Some(n) => (n, false),
                    None => continue,
                }
            } else if md.is_dir() {
                (fname, true)
            } else if md.file_type().is_block_device() {
                (fname, false)
            } else {
                continue;
            };
            if !image_name_is_valid(name) || out.iter().any(|c| c.name == name) {
                continue;
            }
            out.push(Candidate {
                name: name.to_string(),
                path,
                directory,
                class: Some(class),
            });
        }
    }
    Ok(out)
}

/// An image named on the command line: its name is the file name without `.raw` (a symlink's
/// own name, not its target's); a `.sysext.raw` or `.confext.raw` name gives the class too.
pub fn candidate_from_path(path: &Path) -> Result<Candidate, MergeError> {
    let md = fs::metadata(path).map_err(io_err("reading image", path))?;
    let fname =
        path.file_name()
            .and_then(|f| f.to_str())
            .ok_or_else(|| MergeError::NotAnImage {
                path: path.to_path_buf(),
            })?;
    let (name, directory) = if md.is_dir() {
        (fname, true)
    } else if md.is_file() || md.file_type().is_block_device() {
        for c in [ImageClass::Sysext, ImageClass::Confext] {
            if let Some(n) = fname.strip_suffix(c.raw_suffix()).filter(|n| !n.is_empty()) {
                return finish(path, n, false, Some(c));
            }
        }
        (fname.strip_suffix(".raw").unwrap_or(fname), false)
    } else {
        return Err(MergeError::NotAnImage {
            path: path.to_path_buf(),
        });
    };
    finish(path, name, directory, None)
}

fn finish(
    path: &Path,
    name: &str,
    directory: bool,
    class: Option<ImageClass>,
) -> Result<Candidate, MergeError> {
    if let Err(e) = release::validate_name(name) {
        return Err(MergeError::InvalidName {
            path: path.to_path_buf(),
            source: e,
        });
    }
    let path = std::path::absolute(path).map_err(io_err("reading image", path))?;
    Ok(Candidate {
        name: name.to_string(),
        path,
        directory,
        class,
    })
}

/// The images [`merge`] and [`run`] consider, in order, masked by name (a discovered image is
/// masked by a given one of the same name and class, or of unknown class).
pub fn candidates(opts: &MergeOptions) -> Result<Vec<Candidate>, MergeError> {
    let mut out: Vec<Candidate> = Vec::new();
    for p in &opts.images {
        let c = candidate_from_path(p)?;
        if !out.iter().any(|o| o.name == c.name) {
            out.push(c);
        }
    }
    if opts.discover {
        for c in discover(&opts.root)? {
            let masked = out
                .iter()
                .any(|o| o.name == c.name && (o.class.is_none() || o.class == c.class));
            if !masked {
                out.push(c);
            }
        }
    }
    Ok(out)
}
