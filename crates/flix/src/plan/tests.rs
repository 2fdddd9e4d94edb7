use super::*;

#[test]
fn entries_parse() {
    assert_eq!(
        parse_entry("/usr/bin/x").unwrap(),
        EntrySpec {
            source: "/usr/bin/x".into(),
            target: None
        }
    );
    assert_eq!(
        parse_entry("/etc/terminfo:/usr/share/terminfo")
            .unwrap()
            .target,
        Some(PathBuf::from("/usr/share/terminfo"))
    );
    for bad in ["usr/bin/x", "/x:/etc/y", "/x:/usr/../etc", "/x:usr/y"] {
        assert!(parse_entry(bad).is_err(), "{bad}");
    }
}

#[test]
fn placement_avoids_host_symlinks() {
    let cases = [
        ("usr/sbin/nginx", Some("usr/bin/nginx")),
        ("usr/sbin", Some("usr/bin")),
        ("usr/local/sbin/x", Some("usr/local/bin/x")),
        ("usr/bin/b3sum", Some("usr/bin/b3sum")),
        ("usr/sbinx/y", Some("usr/sbinx/y")),
        ("usr/lib64/libfoo.so", None),
        ("usr/lib64", None),
        ("usr/lib/python3.13", Some("usr/lib/python3.13")),
    ];
    for (input, want) in cases {
        let got = place(Path::new(input), input).ok();
        assert_eq!(got, want.map(PathBuf::from), "{input}");
    }
}

#[test]
fn relative_links() {
    assert_eq!(
        relative_link(Path::new("usr/bin"), Path::new("usr/bin/python3.13")),
        PathBuf::from("python3.13")
    );
    assert_eq!(
        relative_link(Path::new("usr/bin"), Path::new("usr/lib/x/y")),
        PathBuf::from("../lib/x/y")
    );
}

#[test]
fn shebangs() {
    assert_eq!(shebang(b"#!/bin/sh\n"), Some(("/bin/sh".into(), None)));
    assert_eq!(
        shebang(b"#! /usr/bin/env python3 -u\nx"),
        Some(("/usr/bin/env".into(), Some("python3".into())))
    );
    assert_eq!(shebang(b"\x7fELF"), None);
}

#[test]
fn tree_paths() {
    for good in ["usr", "usr/bin/x", "usr/local/n/libc.so.6"] {
        assert!(is_inside_tree(Path::new(good)), "{good}");
    }
    for bad in ["", "/usr/bin/x", "usr/../etc", "./usr", "usr/./x/../../.."] {
        assert!(!is_inside_tree(Path::new(bad)), "{bad}");
    }
}

#[test]
fn names() {
    assert_eq!(check_name("tools").unwrap(), Vec::<String>::new());
    assert!(
        !check_name("my_tools").unwrap().is_empty(),
        "'_' is warned about"
    );
    for bad in ["", "a/b", "..", ".x", "a:b"] {
        assert!(check_name(bad).is_err(), "{bad:?}");
    }
}
