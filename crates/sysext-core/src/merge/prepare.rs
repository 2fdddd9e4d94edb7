//! Reading the root (os-release, the hierarchies, symlinks inside it) and the images
//! (release files, compatibility) before the overlays are built; skip messages as systemd
//! prints them.

use super::*;

pub(super) fn is_host_root(root: &Path) -> bool {
    root.as_os_str().is_empty()
        || fs::canonicalize(root)
            .map(|p| p == Path::new("/"))
            .unwrap_or(false)
}

/// Resolve `inside` (absolute) with `root` as `/`, symlinks included. `None`: it does not exist.
pub(super) fn chase(root: &Path, inside: &str) -> Result<Option<PathBuf>, MergeError> {
    let rel = inside.trim_start_matches('/');
    if rel.is_empty() {
        return Ok(Some(root.to_path_buf()));
    }
    let dir = match rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(d) => d,
        Err(e) if e == rustix::io::Errno::NOENT => return Ok(None),
        Err(e) => return Err(io_err("opening", root)(e.into())),
    };
    let fd = match safefs::openat2(
        &dir,
        rel,
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => fd,
        Err(e) if e == rustix::io::Errno::NOENT || e == rustix::io::Errno::NOTDIR => {
            return Ok(None)
        }
        Err(e) => return Err(io_err("resolving", root.join(rel))(e.into())),
    };
    let link = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
    fs::read_link(&link)
        .map(Some)
        .map_err(io_err("resolving", root.join(rel)))
}

/// Like [`chase`], but a missing path resolves to where it would be created.
pub(super) fn chase_nonexistent(root: &Path, inside: &str) -> Result<PathBuf, MergeError> {
    if let Some(p) = chase(root, inside)? {
        return Ok(p);
    }
    let p = Path::new(inside);
    match (p.parent(), p.file_name()) {
        (Some(parent), Some(name)) if parent != Path::new("/") || !name.is_empty() => {
            let parent = chase_nonexistent(root, &parent.to_string_lossy())?;
            Ok(parent.join(name))
        }
        _ => Ok(root.join(inside.trim_start_matches('/'))),
    }
}

pub(super) fn dir_is_empty(p: &Path) -> Result<bool, MergeError> {
    let mut rd = fs::read_dir(p).map_err(io_err("reading", p))?;
    Ok(rd.next().is_none())
}

/// Read the root's os-release: `etc/os-release`, else `usr/lib/os-release`.
pub(super) fn host_release(root: &Path) -> Result<OsRelease, MergeError> {
    for p in ["/etc/os-release", "/usr/lib/os-release"] {
        if let Some(path) = chase(root, p)? {
            let r = OsRelease::read(&path)?;
            if r.get("ID").map(str::is_empty).unwrap_or(true) {
                return Err(MergeError::NoHostId {
                    root: root.to_path_buf(),
                });
            }
            return Ok(r);
        }
    }
    Err(MergeError::NoHostRelease {
        root: root.to_path_buf(),
    })
}

/// The extension-release file of a mounted image of `class`, as systemd 252's
/// `open_extension_release()`.
pub(super) fn find_release(
    image_root: &Path,
    name: &str,
    class: ImageClass,
) -> Result<Option<PathBuf>, MergeError> {
    let exact = format!("/{}", class.release_file(name).display());
    if let Some(p) = chase(image_root, &exact)? {
        return Ok(Some(p));
    }
    let Some(dir) = chase(image_root, &format!("/{}", class.release_dir()))? else {
        return Ok(None);
    };
    let Ok(rd) = fs::read_dir(&dir) else {
        return Ok(None);
    };
    let mut found = None;
    for de in rd.flatten() {
        let fname = de.file_name();
        let Some(other) = fname
            .to_str()
            .and_then(|f| f.strip_prefix("extension-release."))
        else {
            continue;
        };
        if !image_name_is_valid(other) || !de.file_type().map(|t| t.is_file()).unwrap_or(false) {
            continue;
        }
        let mut buf = [0u8; 64];
        let strict =
            match rustix::fs::lgetxattr(de.path(), "user.extension-release.strict", &mut buf) {
                Ok(n) => std::str::from_utf8(&buf[..n])
                    .ok()
                    .and_then(crate::units::parse_boolean),
                Err(_) => continue,
            };
        if strict != Some(false) {
            continue;
        }
        if found.is_some() {
            // Ambiguous: systemd refuses to pick one.
            return Ok(None);
        }
        found = Some(de.path());
    }
    Ok(found)
}

/// The state built inside the private namespace.
pub(super) struct Prepared {
    pub(super) report: MergeReport,
    /// (hierarchy, overlay mount path in the workspace, target path in the root).
    pub(super) overlays: Vec<(String, PathBuf, PathBuf)>,
}

pub(super) fn mkdir_p(p: &Path, mode: u32) -> Result<(), MergeError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(p)
        .map_err(io_err("creating directory", p))
}

/// Mount the images, check them, build the overlays (not yet placed). Runs in the private
/// namespace; `ws` is a private tmpfs.
pub(super) fn prepare(
    opts: &MergeOptions,
    cands: &[Candidate],
    ws: &Path,
    create_hierarchies: bool,
) -> Result<Prepared, MergeError> {
    let root = &opts.root;
    let host = host_release(root)?;
    let arch = if opts.force {
        ""
    } else {
        release::host_architecture().ok_or(MergeError::UnknownArchitecture)?
    };
    let mut report = MergeReport {
        root: root.clone(),
        extensions: Vec::new(),
        skipped: Vec::new(),
        hierarchies: Vec::new(),
        collisions: Vec::new(),
        warnings: Vec::new(),
    };
    let mut mounted: Vec<(Layer, PathBuf)> = Vec::new();
    for c in cands {
        let p = ws.join("extensions").join(&c.name);
        mkdir_p(&p, 0o700)?;
        let format = mount_image(c, &p, &opts.certs)?;
        // The class: known from where the image was found or its name, else a sysext unless
        // only a confext release file is there.
        let (class, release_path) = match c.class {
            Some(class) => (class, find_release(&p, &c.name, class)?),
            None => match find_release(&p, &c.name, ImageClass::Sysext)? {
                Some(r) => (ImageClass::Sysext, Some(r)),
                None => match find_release(&p, &c.name, ImageClass::Confext)? {
                    Some(r) => (ImageClass::Confext, Some(r)),
                    None => (ImageClass::Sysext, None),
                },
            },
        };
        let layer = Layer {
            name: c.name.clone(),
            class,
            path: c.path.clone(),
            format,
        };
        // A .raw without any release file aborts the merge; one holding only the other
        // class's release file is skipped like an empty one (systemd 257 reads both).
        let other = match class {
            ImageClass::Sysext => ImageClass::Confext,
            ImageClass::Confext => ImageClass::Sysext,
        };
        if release_path.is_none() && !c.directory && find_release(&p, &c.name, other)?.is_none() {
            return Err(MergeError::NoMetadata {
                name: c.name.clone(),
                path: c.path.clone(),
                class,
            });
        }
        if opts.force {
            mounted.push((layer, p));
            continue;
        }
        if class == ImageClass::Sysext && chase(&p, "/usr/lib/os-release")?.is_some() {
            return Err(MergeError::ContainsOsRelease {
                name: c.name.clone(),
            });
        }
        let ext = match &release_path {
            Some(rp) => OsRelease::read(rp)?,
            None => OsRelease::parse(""),
        };
        match release::check_class_compatibility(class, &ext, &host, arch) {
            Verdict::Compatible => mounted.push((layer, p)),
            Verdict::Incompatible { reason } => report.skipped.push(Skipped {
                name: c.name.clone(),
                path: c.path.clone(),
                message: skip_message(&c.name, &reason),
            }),
        }
    }
    if mounted.is_empty() {
        return Ok(Prepared {
            report,
            overlays: Vec::new(),
        });
    }
    mounted.sort_by(|a, b| strverscmp_improved(&a.0.name, &b.0.name));
    let mut overlays = Vec::new();
    let hierarchies = opts
        .hierarchies
        .iter()
        .map(|h| (ImageClass::Sysext, h))
        .chain(
            opts.confext_hierarchies
                .iter()
                .map(|h| (ImageClass::Confext, h)),
        );
    for (class, h) in hierarchies {
        let of_class: Vec<&(Layer, PathBuf)> =
            mounted.iter().filter(|(l, _)| l.class == class).collect();
        if of_class.is_empty() {
            continue;
        }
        let names: Vec<&str> = of_class.iter().map(|(l, _)| l.name.as_str()).collect();
        let host_dir = match chase(root, h)? {
            Some(d) if !dir_is_empty(&d)? => Some(d),
            _ => None,
        };
        let meta = ws.join("meta").join(h.trim_start_matches('/'));
        let marker_dir = meta.join(class.marker_dir());
        mkdir_p(&marker_dir, 0o755)?;
        for d in [&meta, &marker_dir] {
            fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .map_err(io_err("creating directory", d))?;
        }
        let mut marker = names.join("\n");
        marker.push('\n');
        let ext_file = marker_dir.join(class.marker_file());
        fs::write(&ext_file, marker).map_err(io_err("writing", &ext_file))?;

        // The mutable folder of this hierarchy, if it exists (followed inside the root).
        let mutable_rel = format!("{MUTABLE_DIR}{h}");
        let mutable_dir = match chase(root, &mutable_rel)? {
            Some(d) if d.is_dir() => Some(d),
            _ => None,
        };
        let mut layers = vec![meta.clone()];
        if opts.mutable.imports() {
            if let Some(d) = &mutable_dir {
                layers.push(d.clone());
            }
        }
        let mut ext_dirs: Vec<(String, PathBuf)> = Vec::new();
        for (l, p) in of_class.iter().rev() {
            let Some(d) = chase(p, h)? else { continue };
            if !fs::metadata(&d).map(|m| m.is_dir()).unwrap_or(false) || dir_is_empty(&d)? {
                continue;
            }
            layers.push(d.clone());
            ext_dirs.push((l.name.clone(), d));
        }
        if ext_dirs.is_empty() {
            continue;
        }
        let target = chase_nonexistent(root, h)?;
        if host_dir.is_none() && !target.is_dir() {
            if create_hierarchies {
                // systemd creates a missing hierarchy in the root before mounting over it.
                mkdir_p(&target, 0o755)?;
            } else {
                report.warnings.push(MergeWarning {
                    extension: ext_dirs[0].0.clone(),
                    path: h.clone(),
                    message: format!(
                        "the host has no {h}; not merged there (run never creates directories on the host)"
                    ),
                });
                continue;
            }
        }
        if let Some(d) = &host_dir {
            layers.push(d.clone());
        }
        let refs: Vec<(String, &Path)> = ext_dirs
            .iter()
            .map(|(n, d)| (n.clone(), d.as_path()))
            .collect();
        let (c, w) = collide::analyse(h, &refs, host_dir.as_deref());
        report.collisions.extend(c);
        report.warnings.extend(w);

        let overlay = ws.join("overlay").join(h.trim_start_matches('/'));
        mkdir_p(&overlay, 0o700)?;
        let mut options = overlay_options(&layers);
        // Where writes go, if anywhere: (upperdir, workdir).
        let hname = h.trim_start_matches('/').replace('/', "-");
        let work_name = format!(".systemd-{hname}-workdir");
        let upper = match opts.mutable {
            Mutable::No | Mutable::Import => None,
            Mutable::Auto => mutable_dir.clone().map(|d| {
                let work = d.parent().unwrap_or(&d).join(&work_name);
                (d, work)
            }),
            Mutable::Yes => {
                let d = match &mutable_dir {
                    Some(d) => d.clone(),
                    None => {
                        // systemd creates the folder private, the hierarchy's in it 0755.
                        let base = chase_nonexistent(root, MUTABLE_DIR)?;
                        if !base.is_dir() {
                            mkdir_p(&base, 0o700)?;
                        }
                        let d = chase_nonexistent(root, &mutable_rel)?;
                        mkdir_p(&d, 0o755)?;
                        d
                    }
                };
                let work = d.parent().unwrap_or(&d).join(&work_name);
                Some((d, work))
            }
            Mutable::Ephemeral | Mutable::EphemeralImport => {
                let base = ws.join("mutable").join(&hname);
                let d = base.join(&hname);
                mkdir_p(&d, 0o755)?;
                Some((d, base.join(&work_name)))
            }
        };
        if matches!(opts.mutable, Mutable::Yes | Mutable::Auto) && upper.is_some() {
            // systemd 257 notes the (root-relative) workdir of a persistent mutable merge.
            let f = marker_dir.join("work_dir");
            let text = format!("{}/{work_name}\n", MUTABLE_DIR.trim_start_matches('/'));
            fs::write(&f, text).map_err(io_err("writing", &f))?;
        }
        if let Some((up, work)) = &upper {
            mkdir_p(work, 0o700)?;
            options.push_str(&format!(
                ",upperdir={},workdir={}",
                escape_lowerdir(up),
                escape_lowerdir(work)
            ));
        }
        // Read-only unless writable; systemd-confext 257 mounts /etc nosuid, nodev, noexec.
        let mut flags = match &upper {
            None => MountFlags::RDONLY,
            Some(_) => MountFlags::NODEV | MountFlags::NOATIME,
        };
        if class == ImageClass::Confext {
            flags |= MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
        }
        rustix::mount::mount(
            class.name(),
            &overlay,
            "overlay",
            flags,
            cstring(&options).as_c_str(),
        )
        .map_err(|e| {
            if e == rustix::io::Errno::LOOP {
                MergeError::Overlapping {
                    hierarchy: h.clone(),
                }
            } else {
                MergeError::Mount {
                    what: format!("overlay {options}"),
                    target: overlay.clone(),
                    source: e.into(),
                }
            }
        })?;
        let st = rustix::fs::stat(&overlay).map_err(|e| io_err("stat", &overlay)(e.into()))?;
        let dev_file = marker_dir.join("dev");
        let dev = format!(
            "{}:{}\n",
            rustix::fs::major(st.st_dev),
            rustix::fs::minor(st.st_dev)
        );
        fs::write(&dev_file, dev).map_err(io_err("writing", &dev_file))?;
        report.hierarchies.push(h.clone());
        overlays.push((h.clone(), overlay, target));
    }
    report.extensions = mounted.into_iter().map(|(l, _)| l).collect();
    Ok(Prepared { report, overlays })
}

/// systemd-sysext's log line for a skipped extension, from [`release::check_compatibility`]'s
/// reason (which reads "extension is for ...").
/// The human message for a skipped image; text from the image (its name, release values in
/// `reason`) is escaped ([`gentext::escape`]).
pub(super) fn skip_message(name: &str, reason: &str) -> String {
    gentext::escape(&skip_text(name, reason)).into_owned()
}

pub(super) fn skip_text(name: &str, reason: &str) -> String {
    let rest = reason.strip_prefix("extension ").unwrap_or(reason);
    if rest.starts_with("carries no extension-release data") {
        return format!(
            "Extension '{name}' carries no extension-release data, ignoring extension."
        );
    }
    if let Some(scope) = rest.strip_prefix("is not suitable for scope ") {
        let scope = scope.split(' ').next().unwrap_or(scope);
        return format!(
            "Extension '{name}' is not suitable for scope {scope}, ignoring extension."
        );
    }
    // systemd says "is for OS '<version>'" for a version mismatch too.
    let rest = rest.replacen("is for OS version '", "is for OS '", 1);
    // Only these two of systemd's messages end with a period.
    let period = if rest.starts_with("is for OS '") || rest.starts_with("is for architecture '") {
        "."
    } else {
        ""
    };
    format!("Extension '{name}' {rest}{period}")
}
