//! The command-line convention shared by the toolchain's binaries (`ocirootfs`, `flix`,
//! `flix-patchelf`, `flatwrap`, `sysext`):
//!
//! - [`run_main`]: logging, signal cleanup, the command, and one mapping of its result to an
//!   exit status: 0 ok, 1 findings ([`Exit::FINDINGS`], e.g. `sysext check` found problems),
//!   2 error, printed as `NAME: error: {e:#}` (the whole cause chain).
//! - [`write_stdout`]: data goes to stdout through it; a reader that closed the pipe early
//!   (`--json | head`) ends the run quietly with status 0 instead of a panic. Human summaries go
//!   to stderr.
//! - [`OutputArgs`]: `--output`, `--force`, `--format`, `--fs`, `--compression` of the commands
//!   that write an image, with one help text.
//!
//! Why SIGPIPE stays ignored (Rust's default) and a closed pipe is handled as an error value:
//! with the default action the kernel would end the process in the middle of a write, past
//! the cleanup thread of [`safefs::cleanup`] that removes temp outputs, and any write to another
//! closed pipe or socket (a registry connection, a child's stdin) would end it silently too.

use std::fmt;
use std::io::{self, StdoutLock, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use crate::pack::{ErofsCompression, Format, Fs};
use fsimage::squashfs::Compression;

/// How a command ended, for [`run_main`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit(u8);

impl Exit {
    /// Done, nothing to report.
    pub const OK: Exit = Exit(0);
    /// Checked and found problems (`sysext check`, `sysext deps`, `sysext bake`).
    pub const FINDINGS: Exit = Exit(1);
    /// An error (what [`run_main`] returns for `Err`).
    pub const ERROR: Exit = Exit(2);

    /// A status passed through from elsewhere (a command run in the rootfs, a signal's 128+N);
    /// clamped to 0..=255.
    pub fn code(code: i32) -> Exit {
        Exit(code.clamp(0, 255) as u8)
    }

    /// [`Exit::FINDINGS`] if `found`, else [`Exit::OK`].
    pub fn findings_if(found: bool) -> Exit {
        if found {
            Exit::FINDINGS
        } else {
            Exit::OK
        }
    }

    /// The numeric status.
    pub fn status(self) -> u8 {
        self.0
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e.0)
    }
}

/// The reader of stdout closed it before the output was written: not an error (see the
/// module docs). [`write_stdout`] returns it; [`run_main`] ends with status 0 on it.
#[derive(Debug)]
pub struct StdoutClosed;

impl fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("stdout was closed by its reader")
    }
}

impl std::error::Error for StdoutClosed {}

/// Runs `write` on the locked stdout and flushes it. A closed pipe becomes [`StdoutClosed`]
/// (ending the run with status 0 in [`run_main`]); another failure names stdout.
pub fn write_stdout(
    write: impl FnOnce(&mut StdoutLock<'_>) -> io::Result<()>,
) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    closed_pipe_is_quiet(write(&mut out).and_then(|()| out.flush()))
}

/// Writes `value` as pretty JSON and a newline on stdout, through [`write_stdout`].
pub fn print_json<T: serde::Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    write_stdout(|out| {
        serde_json::to_writer_pretty(&mut *out, value)?;
        writeln!(out)
    })
}

fn closed_pipe_is_quiet(r: io::Result<()>) -> anyhow::Result<()> {
    match r {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        Err(e) => Err(anyhow::Error::new(e).context("writing to stdout")),
    }
}

/// How a binary reports errors: the status and the word after its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Convention {
    /// The exit status of an error.
    pub error: Exit,
    /// Printed between `NAME: ` and the error chain.
    pub label: &'static str,
}

impl Convention {
    /// The toolchain's own: `NAME: error: ...`, status 2.
    pub const TOOLS: Convention = Convention {
        error: Exit::ERROR,
        label: "error: ",
    };
    /// patchelf's, kept by the drop-in `flix-patchelf`: `patchelf: ...`, status 1.
    pub const PATCHELF: Convention = Convention {
        error: Exit(1),
        label: "",
    };
}

/// The binaries' `main`: installs logging ([`crate::logging::init`]) and the signal cleanup
/// ([`safefs::cleanup::install`]), runs `f`, and maps its result to the exit status (see the
/// module docs). `name` prefixes the error line.
pub fn run_main(name: &'static str, f: impl FnOnce() -> anyhow::Result<Exit>) -> ExitCode {
    run_main_as(name, Convention::TOOLS, f)
}

/// [`run_main`] with another [`Convention`] (`flix-patchelf` keeps patchelf's).
pub fn run_main_as(
    name: &'static str,
    conv: Convention,
    f: impl FnOnce() -> anyhow::Result<Exit>,
) -> ExitCode {
    crate::logging::init();
    if let Err(e) = safefs::cleanup::install(name) {
        eprintln!("{name}: {}cannot watch for SIGINT/SIGTERM: {e}", conv.label);
        return conv.error.into();
    }
    let result = f();
    finish(name, conv, result, &mut io::stderr()).into()
}

/// The exit status of a result, the error printed on `err`.
fn finish(
    name: &str,
    conv: Convention,
    result: anyhow::Result<Exit>,
    err: &mut impl Write,
) -> Exit {
    match result {
        Ok(exit) => exit,
        Err(e) if e.chain().any(|c| c.is::<StdoutClosed>()) => Exit::OK,
        Err(e) => {
            // A signal's cleanup may be under way: it ends the process with 128+N.
            safefs::cleanup::wait_if_stopping();
            let _ = writeln!(err, "{name}: {}{e:#}", conv.label);
            conv.error
        }
    }
}

/// The output options of every command that writes an image (flix, flatwrap, `sysext pack`,
/// `sysext convert-torcx`). Flatten it into the command's clap struct.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct OutputArgs {
    /// Output path (default: NAME.raw, or the folder NAME with --format dir, in the current
    /// folder).
    #[arg(short, long, value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Replace an existing output (swapped in atomically; without it an existing output is an
    /// error).
    #[arg(short, long)]
    pub force: bool,
    /// raw: a file system image; dir: a folder, as systemd-sysext also accepts; ddi: a GPT disk
    /// image with the file system and its dm-verity hash tree, as systemd-repart
    /// --make-ddi=sysext lays it out (default: raw, or dir when --output names something that
    /// does not end in ".raw").
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: Option<Format>,
    /// The file system of a raw image: squashfs (default) or erofs.
    #[arg(long, value_name = "FS", default_value_t = Fs::Squashfs)]
    pub fs: Fs,
    /// Compressor, optionally with its level (COMP:LEVEL): gzip (squashfs' default; every
    /// kernel has it), zstd or xz for squashfs; none (erofs' default), lz4, lz4hc (level
    /// 1-12, default 9) or zstd (level 1-22, default 3) for erofs.
    #[arg(long, value_name = "COMP[:LEVEL]")]
    pub compression: Option<CompressionSpec>,
    /// Also write a dm-verity hash tree (sha256, 4 KiB blocks) beside the .raw image:
    /// NAME.verity and NAME.roothash, as systemd-sysext and systemd-dissect look for them.
    #[arg(long)]
    pub verity: bool,
    /// The seed (a UUID, as systemd-repart's --seed) the verity salt and UUIDs are derived
    /// from (default: derived from the name and the timestamp, so builds are reproducible).
    #[arg(long, value_name = "UUID", value_parser = parse_seed)]
    pub seed: Option<[u8; 16]>,
    /// Sign the root hash with this PEM private key, or the key in a PKCS#11 token that a
    /// `pkcs11:` URI names (PIN in the URI or SYSEXT_PKCS11_PIN), with --cert:
    /// NAME.roothash.p7s beside a --verity image, the signature partition of a --format ddi
    /// image. Without it, sign later with `sysext sign`.
    #[arg(long, value_name = "KEY.pem|URI", requires = "cert")]
    pub key: Option<PathBuf>,
    /// The PEM certificate of --key.
    #[arg(long, value_name = "CERT.pem", requires = "key")]
    pub cert: Option<PathBuf>,
}

fn parse_seed(s: &str) -> Result<[u8; 16], String> {
    fsimage::verity::parse_uuid(s)
        .ok_or_else(|| format!("{s:?} is not a UUID (32 hex digits, dashes allowed)"))
}

/// `--compression`'s name: a squashfs compressor (zstd also for EROFS), none, lz4 or lz4hc
/// (EROFS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompressionArg {
    None,
    Squashfs(Compression),
    Lz4,
    Lz4hc,
}

/// `--compression COMP[:LEVEL]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompressionSpec {
    pub kind: CompressionArg,
    pub level: Option<i32>,
}

impl std::str::FromStr for CompressionSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, level) = match s.split_once(':') {
            Some((n, l)) => (
                n,
                Some(
                    l.parse::<i32>()
                        .map_err(|_| format!("compression level {l:?} is not a number"))?,
                ),
            ),
            None => (s, None),
        };
        let kind = match name {
            "none" => CompressionArg::None,
            "lz4" => CompressionArg::Lz4,
            "lz4hc" => CompressionArg::Lz4hc,
            other => other.parse().map(CompressionArg::Squashfs).map_err(|_| {
                format!("unknown compression {other:?}; use gzip, zstd, xz (squashfs) or none, lz4, lz4hc, zstd (erofs)")
            })?,
        };
        Ok(CompressionSpec { kind, level })
    }
}

impl OutputArgs {
    /// The format: `--format`, else by `--output`'s name (".raw" or none given → raw, any
    /// other name → dir).
    pub fn format(&self) -> Format {
        self.format.unwrap_or(match &self.output {
            Some(o) => Format::of_output(o),
            None => Format::Raw,
        })
    }

    /// The output path: `--output`, else `NAME.raw` or `NAME` by [`OutputArgs::format`].
    pub fn path(&self, name: &str) -> PathBuf {
        match &self.output {
            Some(o) => o.clone(),
            None => self.format().default_output(name),
        }
    }

    /// Refuses what [`OutputArgs::apply`] refuses, for commands to call before any work.
    pub fn check(&self) -> anyhow::Result<()> {
        self.apply(&mut crate::pack::PackOptions::default())
    }

    /// Fills the output fields of pack options: force, format, file system, compression
    /// and its level (when `COMP:LEVEL` gives one). Refuses a compression the file system
    /// cannot have (squashfs always compresses, and not with lz4; EROFS not with gzip or
    /// xz).
    pub fn apply(&self, opts: &mut crate::pack::PackOptions) -> anyhow::Result<()> {
        opts.force = self.force;
        opts.format = Some(self.format());
        opts.fs = self.fs;
        opts.verity = self.verity;
        opts.seed = self.seed;
        opts.signer = match (&self.key, &self.cert) {
            (Some(k), Some(c)) => {
                if !self.verity && self.format() != Format::Ddi {
                    anyhow::bail!("--key/--cert sign a root hash: add --verity or --format ddi");
                }
                Some(fsimage::signature::Signer::load(k, c)?)
            }
            _ => None,
        };
        if self.verity && self.format() == Format::Dir {
            anyhow::bail!("--verity needs a .raw image (a folder has no blocks to hash): name the output NAME.raw or drop --verity");
        }
        if self.seed.is_some() && !self.verity && self.format() != Format::Ddi {
            anyhow::bail!("--seed only sets the verity salt and UUIDs: add --verity or --format ddi, or drop --seed");
        }
        if self.verity && self.format() == Format::Ddi {
            anyhow::bail!("--format ddi holds its hash tree in a partition: drop --verity (it writes side files beside a plain image)");
        }
        let kind = self.compression.map(|c| c.kind);
        opts.compression = Compression::Gzip;
        opts.erofs_compression = ErofsCompression::None;
        match (self.fs, kind) {
            (Fs::Squashfs, None) => {}
            (Fs::Squashfs, Some(CompressionArg::Squashfs(c))) => opts.compression = c,
            (Fs::Squashfs, Some(CompressionArg::None)) => anyhow::bail!(
                "squashfs images are always compressed: use --compression gzip, zstd or xz, or --fs erofs for an uncompressed image"
            ),
            (Fs::Squashfs, Some(CompressionArg::Lz4 | CompressionArg::Lz4hc)) => anyhow::bail!(
                "squashfs images are not written with lz4 here: use --compression gzip, zstd or xz, or --fs erofs for lz4"
            ),
            (Fs::Erofs, None | Some(CompressionArg::None)) => {}
            (Fs::Erofs, Some(CompressionArg::Lz4)) => opts.erofs_compression = ErofsCompression::Lz4,
            (Fs::Erofs, Some(CompressionArg::Lz4hc)) => {
                opts.erofs_compression = ErofsCompression::Lz4hc
            }
            (Fs::Erofs, Some(CompressionArg::Squashfs(Compression::Zstd))) => {
                opts.erofs_compression = ErofsCompression::Zstd
            }
            (Fs::Erofs, Some(CompressionArg::Squashfs(c))) => anyhow::bail!(
                "EROFS images are not compressed with {c}: use --compression lz4hc, lz4, zstd or none (the default for --fs erofs), or --fs squashfs to compress with {c}"
            ),
        };
        if let Some(l) = self.compression.and_then(|c| c.level) {
            opts.level = Some(l);
        }
        Ok(())
    }
}

impl clap::ValueEnum for Fs {
    fn value_variants<'a>() -> &'a [Self] {
        &[Fs::Squashfs, Fs::Erofs]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(match self {
            Fs::Squashfs => clap::builder::PossibleValue::new("squashfs").help("compressed"),
            Fs::Erofs => clap::builder::PossibleValue::new("erofs")
                .help("uncompressed unless --compression says lz4, lz4hc or zstd"),
        })
    }
}

impl clap::ValueEnum for Format {
    fn value_variants<'a>() -> &'a [Self] {
        &[Format::Raw, Format::Dir, Format::Ddi]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(match self {
            Format::Raw => clap::builder::PossibleValue::new("raw").help("a squashfs image"),
            Format::Dir => clap::builder::PossibleValue::new("dir").help("a folder"),
            Format::Ddi => clap::builder::PossibleValue::new("ddi")
                .help("a GPT disk image with the file system and its dm-verity hash tree"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cmd {
        #[command(flatten)]
        out: OutputArgs,
    }

    fn parse(args: &[&str]) -> OutputArgs {
        Cmd::try_parse_from(std::iter::once("cmd").chain(args.iter().copied()))
            .unwrap()
            .out
    }

    #[test]
    fn output_names_and_formats() {
        // (arguments, format, path for NAME=tools)
        let cases: &[(&[&str], Format, &str)] = &[
            (&[], Format::Raw, "tools.raw"),
            (&["--format", "dir"], Format::Dir, "tools"),
            (&["-o", "x/y.raw"], Format::Raw, "x/y.raw"),
            (&["--output", "x/tools"], Format::Dir, "x/tools"),
            (&["-o", "x/img", "--format", "raw"], Format::Raw, "x/img"),
            (
                &["-o", "x/t.raw", "--format", "dir"],
                Format::Dir,
                "x/t.raw",
            ),
        ];
        for (args, format, path) in cases {
            let o = parse(args);
            assert_eq!(o.format(), *format, "{args:?}");
            assert_eq!(o.path("tools"), PathBuf::from(path), "{args:?}");
        }
    }

    #[test]
    fn flags_and_short_forms() {
        let o = parse(&["-f", "--compression", "zstd"]);
        assert!(o.force);
        assert_eq!(
            o.compression,
            Some(CompressionSpec {
                kind: CompressionArg::Squashfs(Compression::Zstd),
                level: None
            })
        );
        assert_eq!(parse(&[]).compression, None);
        assert!(parse(&["--force"]).force);
        let mut p = crate::pack::PackOptions::default();
        parse(&["--force", "--format", "dir", "--compression", "xz"])
            .apply(&mut p)
            .unwrap();
        assert!(p.force);
        assert_eq!(p.format, Some(Format::Dir));
        assert_eq!(p.compression, Compression::Xz);
        assert_eq!(p.fs, Fs::Squashfs);
        parse(&[]).apply(&mut p).unwrap();
        assert_eq!(p.compression, Compression::Gzip);
        for ok in [
            &["--fs", "erofs"][..],
            &["--fs", "erofs", "--compression", "none"],
        ] {
            parse(ok).apply(&mut p).unwrap();
            assert_eq!(p.fs, Fs::Erofs);
        }
        for (args, want, level) in [
            (
                &["--fs", "erofs", "--compression", "zstd"][..],
                ErofsCompression::Zstd,
                None,
            ),
            (
                &["--fs", "erofs", "--compression", "lz4hc:12"],
                ErofsCompression::Lz4hc,
                Some(12),
            ),
            (
                &["--fs", "erofs", "--compression", "lz4"],
                ErofsCompression::Lz4,
                None,
            ),
        ] {
            let mut p = crate::pack::PackOptions::default();
            parse(args).apply(&mut p).unwrap();
            assert_eq!((p.erofs_compression, p.level), (want, level), "{args:?}");
        }
        let e = parse(&["--fs", "erofs", "--compression", "xz"])
            .apply(&mut p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("lz4hc") && e.contains("--fs squashfs"), "{e}");
        let e = parse(&["--compression", "lz4hc"])
            .apply(&mut p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--fs erofs"), "{e}");
        let e = parse(&["--compression", "none"])
            .apply(&mut p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--fs erofs"), "{e}");
        for bad in [
            &["--format", "tar"][..],
            &["--compression", "lz5"],
            &["--compression", "zstd:high"],
            &["--fs", "ext4"],
        ] {
            let e = Cmd::try_parse_from(std::iter::once("cmd").chain(bad.iter().copied()))
                .unwrap_err()
                .to_string();
            assert!(e.contains(bad[1]), "{e}");
        }
    }

    #[test]
    fn exit_statuses() {
        let run = |r: anyhow::Result<Exit>| {
            let mut err = Vec::new();
            let exit = finish("tool", Convention::TOOLS, r, &mut err);
            (exit.status(), String::from_utf8(err).unwrap())
        };
        assert_eq!(run(Ok(Exit::OK)), (0, String::new()));
        assert_eq!(run(Ok(Exit::FINDINGS)), (1, String::new()));
        assert_eq!(run(Ok(Exit::code(300))), (255, String::new()));
        assert_eq!(run(Ok(Exit::code(-1))), (0, String::new()));
        let chained = Err(anyhow::anyhow!("no such file").context("reading x.raw"));
        assert_eq!(
            run(chained),
            (2, "tool: error: reading x.raw: no such file\n".to_string())
        );
        // A closed stdout, also under context, is a quiet normal end.
        let closed = closed_pipe_is_quiet(Err(io::ErrorKind::BrokenPipe.into()))
            .map(|()| Exit::FINDINGS)
            .map_err(|e| e.context("printing the report"));
        assert_eq!(run(closed), (0, String::new()));
        // Any other failure to write stdout is an error naming stdout.
        let full = closed_pipe_is_quiet(Err(io::Error::from_raw_os_error(28))).map(|()| Exit::OK);
        let (code, text) = run(full);
        assert_eq!(code, 2);
        assert!(
            text.starts_with("tool: error: writing to stdout: "),
            "{text}"
        );
        // flix-patchelf's convention: errors are 1.
        let mut err = Vec::new();
        let exit = finish(
            "patchelf",
            Convention::PATCHELF,
            Err(anyhow::anyhow!("x").context("y")),
            &mut err,
        );
        assert_eq!(exit.status(), 1);
        assert_eq!(String::from_utf8(err).unwrap(), "patchelf: y: x\n");
        assert_eq!(Exit::findings_if(true), Exit::FINDINGS);
        assert_eq!(Exit::findings_if(false), Exit::OK);
    }
}
