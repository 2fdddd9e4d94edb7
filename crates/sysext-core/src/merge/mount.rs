//! The images' formats, mounting one in the workspace, and the overlay's options.

use super::*;

pub(super) fn raw_format(path: &Path) -> Result<ImageFormat, MergeError> {
    use std::io::Read;
    let mut f = File::open(path).map_err(io_err("opening image", path))?;
    let mut head = vec![0u8; 2048];
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => return Err(io_err("reading image", path)(e)),
        }
    }
    head.truncate(n);
    detect_format(&head).map_err(|found| MergeError::UnsupportedFormat {
        path: path.to_path_buf(),
        found,
    })
}

/// The file system of a `.raw` image from its first 2 KiB (or what there is of them).
pub fn detect_format(head: &[u8]) -> Result<ImageFormat, &'static str> {
    let at = |o: usize, len: usize| head.get(o..o + len);
    if at(0, 4) == Some(b"hsqs") {
        Ok(ImageFormat::Squashfs)
    } else if at(1024, 4) == Some(&0xE0F5_E1E2u32.to_le_bytes()) {
        Ok(ImageFormat::Erofs)
    } else if at(1080, 2) == Some(&0xEF53u16.to_le_bytes()) {
        Ok(ImageFormat::Ext4)
    } else if at(512, 8) == Some(b"EFI PART") {
        Err("a GPT disk image")
    } else if head.is_empty() {
        Err("an empty file")
    } else {
        Err("unknown content")
    }
}

pub(super) fn cstring(s: &str) -> CString {
    CString::new(s.replace('\0', "")).unwrap_or_default()
}

/// Mount one image read-only at `target`.
pub(super) fn mount_image(c: &Candidate, target: &Path) -> Result<ImageFormat, MergeError> {
    if c.directory {
        let merr = |source| MergeError::Mount {
            what: c.path.display().to_string(),
            target: target.to_path_buf(),
            source,
        };
        rustix::mount::mount_bind_recursive(&c.path, target).map_err(|e| merr(e.into()))?;
        rustix::mount::mount_remount(target, MountFlags::BIND | MountFlags::RDONLY, c"")
            .map_err(|e| merr(e.into()))?;
        return Ok(ImageFormat::Directory);
    }
    let md = fs::metadata(&c.path).map_err(io_err("reading image", &c.path))?;
    let format = raw_format(&c.path)?;
    let fstype = match format {
        ImageFormat::Squashfs => "squashfs",
        ImageFormat::Erofs => "erofs",
        ImageFormat::Ext4 => "ext4",
        ImageFormat::Directory => unreachable!("raw_format never returns Directory"),
    };
    let (source, _loop) = if md.file_type().is_block_device() {
        (c.path.clone(), None)
    } else {
        let backing = File::open(&c.path).map_err(io_err("opening image", &c.path))?;
        let dev =
            sys::LoopDevice::attach(&backing, &c.path.to_string_lossy()).map_err(|source| {
                MergeError::Loop {
                    path: c.path.clone(),
                    source,
                }
            })?;
        (dev.path.clone(), Some(dev))
    };
    // The loop device (autoclear) stays attached as long as the mount uses it; `_loop` closes
    // our descriptor at the end of this function.
    rustix::mount::mount(
        &source,
        target,
        fstype,
        MountFlags::RDONLY | MountFlags::NODEV,
        None,
    )
    .map_err(|e| MergeError::Mount {
        what: format!("{} ({fstype})", c.path.display()),
        target: target.to_path_buf(),
        source: e.into(),
    })?;
    Ok(format)
}

/// Escape a lowerdir entry as systemd's `shell_escape(path, ",:")`.
pub(super) fn escape_lowerdir(p: &Path) -> String {
    let mut out = String::new();
    for ch in p.to_string_lossy().chars() {
        if matches!(ch, ',' | ':' | '\\' | '"') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

/// The overlay option string for `layers` (topmost first).
pub fn overlay_options(layers: &[PathBuf]) -> String {
    let parts: Vec<String> = layers.iter().map(|p| escape_lowerdir(p)).collect();
    format!("lowerdir={}", parts.join(":"))
}
