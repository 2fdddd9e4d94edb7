//! The `flix` command line: `flix SOURCE NAME PATH...`.
//!
//! Arguments as the upstream `flix.sh`, so its users can switch: SOURCE, NAME, and entries
//! (`PATH` under `/usr`, or `SRC:/usr/TARGET`); `EXTRALIBS` (space separated) and
//! `--extra-lib` for libraries loaded with dlopen.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Parser;
use ocirootfs::cli::SourceArgs;
use sysext_core::cli::{Exit, OutputArgs};
use sysext_core::pack::PackOptions;

use crate::plan::{self, PlanOptions, Severity};
use crate::stage;

/// Relocate programs and everything they load from a container image or rootfs into a
/// self-contained systemd-sysext image: programs keep their /usr path, their libraries and
/// loader go to /usr/local/NAME/, every relocated ELF object gets its own RUNPATH.
#[derive(Debug, Parser)]
#[command(name = "flix", version)]
pub struct Args {
    /// Image reference (e.g. alpine:latest), oci:DIR[:TAG], oci-archive:FILE,
    /// docker-archive:FILE, or a rootfs folder.
    pub source: String,
    /// Extension name (the image is NAME.raw, its release file extension-release.NAME).
    pub name: String,
    /// Entries inside the source: programs, resource files or folders, systemd units,
    /// symlinks; SRC:/usr/TARGET ships SRC at TARGET (needed for entries outside /usr).
    #[arg(required = true)]
    pub paths: Vec<String>,
    /// A library loaded with dlopen (path inside the source); its closure comes too.
    /// Repeatable; `EXTRALIBS` (space separated) adds more.
    #[arg(long = "extra-lib", value_name = "PATH")]
    pub extra_lib: Vec<String>,
    /// Which libraries named by the objects' dlopen metadata notes (.note.dlopen) to ship
    /// with their closure: required, recommended (also required ones), suggested (all) or none.
    #[arg(long, value_name = "LEVEL", default_value = "recommended")]
    pub dlopen: elf_closure::dlopen::DlopenFollow,
    /// glibc's data for the relocated libc (gconv modules, locales, NSS modules), shipped in
    /// /usr/local/NAME/glibc and read through a short link, never at the host's paths: what
    /// the programs use (auto), all three (all) or none.
    #[arg(long, value_name = "WHICH", default_value = "auto")]
    pub glibc_data: crate::plan::GlibcDataMode,
    /// Start this unit (one of the entries) with the extension: writes an Upholds= drop-in
    /// for its WantedBy= target.
    #[arg(long, value_name = "UNIT")]
    pub enable: Vec<String>,
    #[command(flatten)]
    pub out: OutputArgs,
    /// Bind the image to this OS ID (default: ID=_any).
    #[arg(long)]
    pub os: Option<String>,
    /// SYSEXT_LEVEL of an OS-bound image.
    #[arg(long, requires = "os")]
    pub sysext_level: Option<String>,
    /// VERSION_ID of an OS-bound image.
    #[arg(long, requires = "os")]
    pub version_id: Option<String>,
    #[command(flatten)]
    pub source_opts: SourceArgs,
    /// Print the plan and the pack report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Keep setuid/setgid bits and file capabilities of the source's files (stripped and
    /// listed by default: once merged, they would run with privilege on the host).
    #[arg(long)]
    pub keep_privileges: bool,
}

impl Args {
    /// `--extra-lib` values followed by the `EXTRALIBS` environment variable's words.
    pub fn extra_libs(&self, env: Option<&str>) -> Vec<String> {
        let mut v = self.extra_lib.clone();
        if let Some(e) = env {
            v.extend(e.split_whitespace().map(str::to_string));
        }
        v
    }

    /// The output path.
    pub fn output_path(&self) -> PathBuf {
        self.out.path(&self.name)
    }
}

fn open_source(args: &Args) -> anyhow::Result<ocirootfs::Rootfs> {
    let opts = args.source_opts.options(true);
    ocirootfs::materialize(&args.source, &opts)
        .with_context(|| format!("reading the source {}", args.source))
}

/// systemd's architecture name for an OCI platform (`linux/arm64`, `amd64`, ...).
pub fn platform_arch(platform: &str) -> Option<&'static str> {
    let arch = platform
        .split('/')
        .nth(if platform.contains('/') { 1 } else { 0 })?;
    sysext_core::release::arch_from_uname(match arch {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        "386" => "i686",
        "ppc64le" => "ppc64le",
        other => other,
    })
}

/// Runs `flix` with parsed arguments.
pub fn run(args: Args) -> anyhow::Result<Exit> {
    // The name first: nothing is pulled or staged for a name no image may have.
    plan::check_name(&args.name)?;
    let mut pack_opts = PackOptions::default();
    args.out.apply(&mut pack_opts)?;
    let extra = args.extra_libs(std::env::var("EXTRALIBS").ok().as_deref());
    let started = std::time::Instant::now();
    let rootfs = open_source(&args)?;
    let sourced = started.elapsed();
    let root = rootfs.path.clone();
    let opts = PlanOptions {
        name: args.name.clone(),
        paths: args.paths.clone(),
        extra_libs: extra,
        enable: args.enable.clone(),
        os: args.os.clone(),
        sysext_level: args.sysext_level.clone(),
        version_id: args.version_id.clone(),
        dlopen: args.dlopen,
        glibc_data: args.glibc_data,
    };
    let plan = plan::build(&root, &opts)
        .with_context(|| format!("planning extension {} from {}", args.name, args.source))?;
    let planned = started.elapsed();
    if let (Some(p), Some(found)) = (&args.source_opts.platform, &plan.architecture) {
        if let Some(want) = platform_arch(p) {
            if want != found {
                bail!(
                    "--platform {p} asks for {want}, but the programs in {} are for {found}; pick the image for {want} or drop --platform",
                    args.source
                );
            }
        }
    }
    for d in &plan.diagnostics {
        let level = match d.severity {
            Severity::Note => "note",
            Severity::Warning => "warning",
        };
        match &d.hint {
            Some(h) => eprintln!("flix: {level}: {}\n  hint: {h}", d.message),
            None => eprintln!("flix: {level}: {}", d.message),
        }
    }
    let output = args.output_path();
    let mut stage_opts = stage::StageOptions::new(args.keep_privileges);
    // The staged tree is packed and removed, so files of an image we unpacked are linked.
    stage_opts.link_source = rootfs.unpacked();
    let (report, stripped) = stage::stage_and_pack(&plan, &output, &pack_opts, &stage_opts)
        .with_context(|| format!("writing {}", output.display()))?;
    let packed = started.elapsed();
    safefs::tree::report_stripped("flix", &stripped, "--keep-privileges");
    if args.json {
        // Where the time went: getting the rootfs (pull and unpack, or nothing for a folder),
        // planning (closure, ELF reads), staging with the rewrites and packing.
        let seconds = serde_json::json!({
            "source": sourced.as_secs_f64(),
            "plan": (planned - sourced).as_secs_f64(),
            "stage_and_pack": (packed - planned).as_secs_f64(),
        });
        let v = serde_json::json!({ "plan": plan, "pack": report, "stripped": stripped, "seconds": seconds });
        sysext_core::cli::print_json(&v)?;
    } else {
        eprintln!(
            "flix: wrote {} ({} libraries, {} bytes)",
            report.output.display(),
            plan.libraries.len(),
            report.bytes
        );
    }
    Ok(Exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_upstream_style() {
        let a = Args::try_parse_from([
            "flix",
            "/src",
            "tools",
            "/usr/bin/b3sum",
            "/etc/terminfo:/usr/share/terminfo",
            "--extra-lib",
            "/usr/lib/libx.so.1",
            "--compression",
            "zstd",
            "--format",
            "dir",
        ])
        .unwrap();
        assert_eq!(a.paths.len(), 2);
        assert_eq!(
            a.out.compression.map(|c| c.kind),
            Some(sysext_core::cli::CompressionArg::Squashfs(
                sysext_core::pack::Compression::Zstd
            ))
        );
        assert_eq!(a.output_path(), PathBuf::from("tools"));
        assert_eq!(
            a.extra_libs(Some(" /a.so  /b.so ")),
            vec!["/usr/lib/libx.so.1", "/a.so", "/b.so"]
        );
    }

    #[test]
    fn platforms_map_to_systemd_architectures() {
        assert_eq!(platform_arch("linux/amd64"), Some("x86-64"));
        assert_eq!(platform_arch("linux/arm64/v8"), Some("arm64"));
        assert_eq!(platform_arch("arm64"), Some("arm64"));
        assert_eq!(platform_arch("linux/nonsense"), None);
    }

    #[test]
    fn rejects_missing_paths_and_unbound_levels() {
        assert!(Args::try_parse_from(["flix", "/src", "tools"]).is_err());
        assert!(
            Args::try_parse_from(["flix", "/src", "t", "/usr/bin/x", "--sysext-level", "1.0"])
                .is_err()
        );
        let a = Args::try_parse_from([
            "flix",
            "/src",
            "t",
            "/usr/bin/x",
            "--os",
            "flatcar",
            "--sysext-level",
            "1.0",
        ])
        .unwrap();
        assert_eq!(a.output_path(), PathBuf::from("t.raw"));
    }
}
