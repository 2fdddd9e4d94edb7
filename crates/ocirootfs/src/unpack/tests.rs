use super::*;

fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn missing_trailer_is_accepted_but_cut_data_is_not() {
    let full = tar_of(&[("a", b"hello"), ("b", b"world!")]);
    // Cut right after b's data: no padding, no end-of-archive blocks (umoci 0.4 insert).
    let cut_after_data = &full[..512 + 512 + 512 + 6];
    let tmp = tempfile::tempdir().unwrap();
    let d = format!("sha256:{}", hex::encode(Sha256::digest(cut_after_data)));
    let stats = apply_layer(
        tmp.path(),
        cut_after_data,
        Some(&d),
        Some(&d),
        &UnpackOptions::default(),
    )
    .unwrap();
    assert_eq!(stats.entries, 2);
    assert_eq!(std::fs::read(tmp.path().join("b")).unwrap(), b"world!");
    // Cut inside b's data: an error, not a zero-padded file.
    let tmp = tempfile::tempdir().unwrap();
    let err = apply_layer(
        tmp.path(),
        &full[..512 * 3 + 3],
        None,
        None,
        &UnpackOptions::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("tar stream"), "{err}");
    // A wrong diff_id is refused.
    let tmp = tempfile::tempdir().unwrap();
    let wrong = format!("sha256:{}", "0".repeat(64));
    let err = apply_layer(
        tmp.path(),
        &full[..],
        None,
        Some(&wrong),
        &UnpackOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, UnpackError::DiffId { .. }), "{err}");
}

#[test]
fn read_only_dirs_get_their_mode_last_without_root() {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o555);
    h.set_size(0);
    h.set_cksum();
    b.append_data(&mut h, "ro", &b""[..]).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(2);
    h.set_cksum();
    b.append_data(&mut h, "ro/f", &b"hi"[..]).unwrap();
    let tar = b.into_inner().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let opts = UnpackOptions { as_root: false };
    apply_layer(tmp.path(), &tar[..], None, None, &opts).unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(tmp.path().join("ro"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o555);
    assert_eq!(std::fs::read(tmp.path().join("ro/f")).unwrap(), b"hi");
}

/// A GNU sparse entry `name` of `real` bytes holding "head" at 0 and "tail" at the end.
fn sparse_tar(name: &str, real: u64) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.set_path(name).unwrap();
    h.set_entry_type(tar::EntryType::GNUSparse);
    h.set_mode(0o644);
    h.set_size(1024);
    {
        let g = h.as_gnu_mut().unwrap();
        g.sparse[0].set_offset(0);
        g.sparse[0].set_length(512);
        g.sparse[1].set_offset(real - 512);
        g.sparse[1].set_length(512);
        g.set_real_size(real);
    }
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    let mut data = b"head".to_vec();
    data.resize(1020, 0);
    data.extend_from_slice(b"tail");
    out.extend_from_slice(&data);
    out.extend_from_slice(&[0u8; 1024]);
    out
}

#[test]
fn gnu_sparse_entries_stay_sparse() {
    use std::os::unix::fs::MetadataExt;
    let real = 2u64 << 30;
    let layer = sparse_tar("big", real);
    let tmp = tempfile::tempdir().unwrap();
    apply_layer(
        tmp.path(),
        &layer[..],
        None,
        None,
        &UnpackOptions::default(),
    )
    .unwrap();
    let m = std::fs::metadata(tmp.path().join("big")).unwrap();
    assert_eq!(m.len(), real);
    assert!(
        m.blocks() * 512 < 1 << 20,
        "{} blocks allocated",
        m.blocks()
    );
    let f = std::fs::File::open(tmp.path().join("big")).unwrap();
    let mut b = [0u8; 4];
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut b, real - 4).unwrap();
    assert_eq!(&b, b"tail");
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut b, 0).unwrap();
    assert_eq!(&b, b"head");
}

#[test]
fn many_folders_keep_few_descriptors_and_opaque_whiteouts_keep_this_layer() {
    let mut b = tar::Builder::new(Vec::new());
    let dir = |b: &mut tar::Builder<Vec<u8>>, name: &str| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        h.set_cksum();
        b.append_data(&mut h, name, &b""[..]).unwrap();
    };
    let file = |b: &mut tar::Builder<Vec<u8>>, name: &str| {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(1);
        h.set_cksum();
        b.append_data(&mut h, name, &b"x"[..]).unwrap();
    };
    for i in 0..1500 {
        dir(&mut b, &format!("d{i}"));
        dir(&mut b, &format!("d{i}/s"));
    }
    file(&mut b, "keep/old");
    file(&mut b, "keep/sub/old");
    let lower = b.into_inner().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let fds = || std::fs::read_dir("/proc/self/fd").unwrap().count();
    let before = fds();
    apply_layer(
        tmp.path(),
        &lower[..],
        None,
        None,
        &UnpackOptions::default(),
    )
    .unwrap();
    assert!(
        fds() <= before + 8,
        "descriptors left open: {} -> {}",
        before,
        fds()
    );
    assert!(tmp.path().join("d1499/s").is_dir());
    // Upper layer: the opaque marker after new content in the same folder.
    let mut b = tar::Builder::new(Vec::new());
    file(&mut b, "keep/new");
    file(&mut b, "keep/sub/new");
    file(&mut b, "keep/.wh..wh..opq");
    let upper = b.into_inner().unwrap();
    apply_layer(
        tmp.path(),
        &upper[..],
        None,
        None,
        &UnpackOptions::default(),
    )
    .unwrap();
    let k = tmp.path().join("keep");
    assert!(k.join("new").is_file() && k.join("sub/new").is_file());
    assert!(!k.join("old").exists() && !k.join("sub/old").exists());
}

#[test]
fn components_refuse_dotdot() {
    assert_eq!(components(b"/a/./b/").unwrap(), vec![&b"a"[..], b"b"]);
    assert!(components(b"a/../../etc").is_err());
    assert!(components(b"..").is_err());
    assert!(components(b".").unwrap().is_empty());
}
