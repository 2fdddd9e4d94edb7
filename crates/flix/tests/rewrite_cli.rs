//! flix-patchelf's command line: several files, --output (also to a symlink or a FIFO),
//! --shrink-rpath with --allowed-rpath-prefixes, exit codes and messages.

use std::fs;
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_flix-patchelf");

fn pe(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn host() -> bool {
    Path::new("/usr/bin/ls").exists() && Path::new("/usr/lib/x86_64-linux-gnu/libz.so.1").exists()
}

#[test]
fn several_files_output_and_errors() {
    if !host() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let a = t.join("a");
    let b = t.join("libz.so.1");
    fs::copy("/usr/bin/ls", &a).unwrap();
    fs::copy("/usr/lib/x86_64-linux-gnu/libz.so.1", &b).unwrap();
    let a_s = a.to_str().unwrap();
    let b_s = b.to_str().unwrap();

    let o = pe(&[
        "--set-rpath",
        "/opt/one:/opt/two",
        "--force-rpath",
        a_s,
        b_s,
    ]);
    assert!(o.status.success(), "{o:?}");
    let o = pe(&["--print-rpath", a_s, b_s]);
    assert_eq!(stdout(&o), "/opt/one:/opt/two\n/opt/one:/opt/two\n");

    // --add-rpath appends; --remove-rpath removes both kinds.
    assert!(pe(&["--add-rpath", "/opt/three", a_s]).status.success());
    assert_eq!(
        stdout(&pe(&["--print-rpath", a_s])),
        "/opt/one:/opt/two:/opt/three\n"
    );
    assert!(pe(&["--remove-rpath", a_s]).status.success());
    assert_eq!(stdout(&pe(&["--print-rpath", a_s])), "\n");

    // --output leaves the input alone; through a symlink the link stays a link.
    let before = fs::read(&b).unwrap();
    let real = t.join("real.so");
    fs::write(&real, b"placeholder").unwrap();
    let link = t.join("link.so");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let o = pe(&[
        "--set-soname",
        "libzz.so.1",
        "--output",
        link.to_str().unwrap(),
        b_s,
    ]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(fs::read(&b).unwrap(), before);
    assert!(fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        stdout(&pe(&["--print-soname", real.to_str().unwrap()])),
        "libzz.so.1\n"
    );

    // --output to a FIFO writes into it instead of replacing it.
    let fifo = t.join("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || fs::read(&fifo).unwrap())
    };
    let o = pe(&[
        "--set-soname",
        "libfifo.so.1",
        "--output",
        fifo.to_str().unwrap(),
        b_s,
    ]);
    assert!(o.status.success(), "{o:?}");
    let got = reader.join().unwrap();
    assert!(got.starts_with(b"\x7fELF") && got.windows(12).any(|w| w == b"libfifo.so.1"));
    assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());

    // Errors: exit 1 with patchelf's prefix; other files are still processed.
    let text = t.join("text");
    fs::write(&text, "not an elf\n").unwrap();
    let o = pe(&["--print-needed", text.to_str().unwrap(), b_s]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("patchelf: "),
        "{o:?}"
    );
    assert!(stdout(&o).contains("libc.so.6"));
    let o = pe(&["--output", "x", a_s, b_s]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("only allowed with single input file"));
    let o = pe(&["--print-interpreter", b_s]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot find section '.interp'"));
    assert!(stdout(&pe(&["--version"])).starts_with("patchelf "));
}

use std::os::unix::fs::FileTypeExt;

#[test]
fn shrink_rpath_keeps_only_dirs_with_needed_libraries() {
    if !host() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    for d in ["has-libc", "empty", "other/has-libc-too"] {
        fs::create_dir_all(t.join(d)).unwrap();
    }
    fs::copy(
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        t.join("has-libc/libc.so.6"),
    )
    .unwrap();
    fs::copy(
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        t.join("other/has-libc-too/libc.so.6"),
    )
    .unwrap();
    let lib = t.join("libz.so.1");
    fs::copy("/usr/lib/x86_64-linux-gnu/libz.so.1", &lib).unwrap();
    let l = lib.to_str().unwrap();
    let d = |s: &str| t.join(s).to_string_lossy().into_owned();
    let rpath = format!(
        "{}:$ORIGIN/x:{}:{}",
        d("empty"),
        d("has-libc"),
        d("other/has-libc-too")
    );
    assert!(pe(&["--set-rpath", &rpath, l]).status.success());
    assert!(pe(&["--shrink-rpath", l]).status.success());
    assert_eq!(
        stdout(&pe(&["--print-rpath", l])),
        format!("$ORIGIN/x:{}\n", d("has-libc"))
    );

    // With allowed prefixes, a directory outside them goes even when it has the library.
    assert!(pe(&["--set-rpath", &rpath, l]).status.success());
    let o = pe(&["--shrink-rpath", "--allowed-rpath-prefixes", &d("other"), l]);
    assert!(o.status.success());
    assert_eq!(
        stdout(&pe(&["--print-rpath", l])),
        format!("$ORIGIN/x:{}\n", d("other/has-libc-too"))
    );
}
