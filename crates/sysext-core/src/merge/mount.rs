//! The images' formats, mounting one in the workspace, and the overlay's options.

use super::*;

pub(super) fn raw_format(
    f: &File,
    path: &Path,
    offset: u64,
    sizelimit: u64,
) -> Result<ImageFormat, MergeError> {
    use std::os::unix::fs::FileExt;
    // Only the image's own bytes: a partition's, when `sizelimit` is set.
    let want = if sizelimit == 0 {
        2048
    } else {
        sizelimit.min(2048)
    };
    let mut head = vec![0u8; want as usize];
    let mut n = 0;
    while n < head.len() {
        match f.read_at(&mut head[n..], offset + n as u64) {
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

/// The byte range of an image file to mount: its file system's partition (a DDI) or the whole
/// file, after the dm-verity check of a DDI or naked verity image (said on stderr).
fn verified_range(
    c: &Candidate,
    backing: &File,
    certs: &[(PathBuf, fsimage::signature::X509)],
) -> Result<(u64, u64), MergeError> {
    use fsimage::dissect::SignatureVerdict;
    // Dissected from the descriptor the loop device will use: the partition table, hash
    // tree and signature read are those of what is mounted.
    let d = fsimage::dissect::Dissected::open_file(backing, &c.path).map_err(|source| {
        MergeError::Dissect {
            path: c.path.clone(),
            source,
        }
    })?;
    let names = || fsimage::signature::cert_names(certs);
    let refuse = |reason: String| MergeError::Signature {
        path: c.path.clone(),
        reason,
    };
    let Some(v) = &d.verity else {
        if !certs.is_empty() {
            return Err(refuse(format!(
                "not signed (no dm-verity hash tree), and a signature is required ({})",
                names()
            )));
        }
        return Ok((0, 0));
    };
    if !certs.is_empty() {
        let x509: Vec<_> = certs.iter().map(|(_, c)| c.clone()).collect();
        match v.check_signature(&x509).map_err(|e| refuse(e.to_string()))? {
            SignatureVerdict::Verified(i) => eprintln!(
                "sysext: {}: root hash signature verified with {}",
                c.path.display(),
                certs[i].0.display()
            ),
            SignatureVerdict::WrongCertificate => {
                return Err(refuse(format!(
                    "the root hash signature does not verify with {}: wrong certificate, or a changed signature",
                    names()
                )))
            }
            SignatureVerdict::Unsigned => {
                return Err(refuse(format!(
                    "not signed, and a signature is required ({})",
                    names()
                )))
            }
        }
    }
    let covered = v
        .verify_with(&d, backing, 0)
        .map_err(|source| MergeError::Verity {
            path: c.path.clone(),
            source,
        })?;
    let from = &v.root_hash_source;
    eprintln!(
        "sysext: {}: no device-mapper used: the dm-verity hash tree was verified in userspace (root hash {}, from {from}); mounting its file system read-only",
        c.path.display(),
        v.root_hash
    );
    Ok((d.data_offset, covered))
}

pub(super) fn cstring(s: &str) -> CString {
    CString::new(s.replace('\0', "")).unwrap_or_default()
}

/// Mount one image read-only at `target`.
pub(super) fn mount_image(
    c: &Candidate,
    target: &Path,
    certs: &[(PathBuf, fsimage::signature::X509)],
) -> Result<ImageFormat, MergeError> {
    // A signature can only be checked on an image file: a folder or a block device is
    // refused when one is required.
    if !certs.is_empty() && (c.directory || !fs::metadata(&c.path).is_ok_and(|m| m.is_file())) {
        return Err(MergeError::Signature {
            path: c.path.clone(),
            reason: format!(
                "not an image file, so it cannot carry a signature, and a signature is required ({})",
                fsimage::signature::cert_names(certs)
            ),
        });
    }
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
    // A DDI or a naked verity image: no device-mapper here, so the hash tree is checked in
    // userspace first, then the file system's range is mounted read-only.
    // One descriptor for the check and the loop device: what is mounted is what was checked.
    // Opened without blocking: a regular file or a block device, never a FIFO.
    let (backing, is_file) = match safefs::tree::open_regular(&c.path) {
        Ok(Ok(f)) => (f, true),
        Ok(Err("a block device")) => (
            File::open(&c.path).map_err(io_err("opening image", &c.path))?,
            false,
        ),
        Ok(Err(kind)) => {
            return Err(io_err("opening image", &c.path)(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("it is {kind}, not an image file, a block device or a folder"),
            )))
        }
        Err(e) => return Err(io_err("opening image", &c.path)(e)),
    };
    let (offset, sizelimit) = if is_file {
        verified_range(c, &backing, certs)?
    } else {
        (0, 0)
    };
    let format = raw_format(&backing, &c.path, offset, sizelimit)?;
    let fstype = match format {
        ImageFormat::Squashfs => "squashfs",
        ImageFormat::Erofs => "erofs",
        ImageFormat::Ext4 => "ext4",
        ImageFormat::Directory => unreachable!("raw_format never returns Directory"),
    };
    let (source, _loop) = if !is_file {
        (c.path.clone(), None)
    } else {
        let dev = sys::LoopDevice::attach_range(
            &backing,
            &c.path.to_string_lossy(),
            offset,
            sizelimit,
            false,
        )
        .map_err(|source| MergeError::Loop {
            path: c.path.clone(),
            source,
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
