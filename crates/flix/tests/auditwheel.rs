//! A real patchelf client: auditwheel (the tool that repairs manylinux wheels, from PyPI)
//! with `flix-patchelf` on PATH as `patchelf`. It checks `patchelf --version` (it refuses
//! anything older than 0.14.5 or unparsable), then vendors a library chain into the wheel and
//! rewrites RUNPATHs and SONAMEs; the repaired wheel imports in a fresh venv without
//! LD_LIBRARY_PATH.

use std::fs;
use std::path::Path;
use std::process::Command;

fn sh(script: &str, cwd: &Path) -> std::process::Output {
    let out = Command::new("sh")
        .args(["-ec", script])
        .current_dir(cwd)
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn auditwheel_repairs_a_wheel_with_flix_patchelf() {
    if !["gcc", "python3"].iter().all(|t| testkit::require_tool(t)) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // auditwheel and the wheel build tools from PyPI, in a venv of their own.
    let venv = Command::new("python3")
        .args(["-m", "venv", "tools"])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(
        venv.status.success(),
        "python3 -m venv (python3-venv): {}",
        String::from_utf8_lossy(&venv.stderr)
    );
    let pip = Command::new(d.join("tools/bin/pip"))
        .args(["install", "-q", "auditwheel", "setuptools", "wheel"])
        .output()
        .unwrap();
    if !pip.status.success() {
        let why = String::from_utf8_lossy(&pip.stderr);
        assert!(
            std::env::var_os("CI").is_none(),
            "pip install auditwheel failed under CI: {why}"
        );
        eprintln!("skipping: pip cannot install auditwheel here: {why}");
        return;
    }

    // A library chain (libouter -> libinner) and an extension module using it.
    fs::create_dir_all(d.join("libs")).unwrap();
    fs::create_dir_all(d.join("pkg/demo")).unwrap();
    fs::create_dir_all(d.join("bin")).unwrap();
    fs::write(d.join("libs/inner.c"), "int inner(void) { return 40; }\n").unwrap();
    fs::write(
        d.join("libs/outer.c"),
        "int inner(void);\nint outer(void) { return inner() + 2; }\n",
    )
    .unwrap();
    fs::write(d.join("pkg/demo/__init__.py"), "").unwrap();
    fs::write(
        d.join("pkg/demo/ext.c"),
        r#"#include <Python.h>
int outer(void);
static PyObject *value(PyObject *s, PyObject *a) { return PyLong_FromLong(outer()); }
static PyMethodDef M[] = {{"value", value, METH_NOARGS, ""}, {0}};
static struct PyModuleDef D = {PyModuleDef_HEAD_INIT, "demo._ext", 0, -1, M};
PyMODINIT_FUNC PyInit__ext(void) { return PyModule_Create(&D); }
"#,
    )
    .unwrap();
    fs::write(
        d.join("pkg/setup.py"),
        format!(
            "from setuptools import setup, Extension\nsetup(name='demo', version='1.0', packages=['demo'], ext_modules=[Extension('demo._ext', ['demo/ext.c'], libraries=['outer'], library_dirs=['{}'])])\n",
            d.join("libs").display()
        ),
    )
    .unwrap();
    sh(
        "gcc -shared -fPIC -o libs/libinner.so libs/inner.c -Wl,-soname,libinner.so
         gcc -shared -fPIC -o libs/libouter.so libs/outer.c -Wl,-soname,libouter.so -Llibs -linner
         cd pkg && ../tools/bin/python setup.py -q bdist_wheel",
        d,
    );
    std::os::unix::fs::symlink(
        testkit::workspace_bin("flix-patchelf"),
        d.join("bin/patchelf"),
    )
    .unwrap();

    // auditwheel finds our patchelf first on PATH, checks its version, and repairs.
    let path = format!(
        "{}:{}",
        d.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let repair = Command::new(d.join("tools/bin/auditwheel"))
        .args(["repair", "-w", "out"])
        .arg(
            fs::read_dir(d.join("pkg/dist"))
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .path(),
        )
        .env("PATH", &path)
        .env("LD_LIBRARY_PATH", d.join("libs"))
        .current_dir(d)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&repair.stderr);
    assert!(repair.status.success(), "auditwheel repair: {log}");
    let wheel = fs::read_dir(d.join("out"))
        .unwrap()
        .next()
        .expect("a repaired wheel")
        .unwrap()
        .path();
    assert!(
        wheel.to_string_lossy().contains("manylinux"),
        "{}",
        wheel.display()
    );

    // A fresh venv, no LD_LIBRARY_PATH, run from another folder: the vendored chain loads.
    let out = sh(
        &format!(
            "python3 -m venv run && run/bin/pip install -q --no-index {w} && cd / && {d}/run/bin/python -c 'import demo._ext as e; print(e.value())'",
            w = wheel.display(),
            d = d.display()
        ),
        d,
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "42\n");
}
