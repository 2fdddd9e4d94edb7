//! The `flatwrap SOURCE NAME PATH...` command line: parse, resolve the source, plan, stage the
//! tree, and write it as `NAME.raw` (squashfs, through `sysext_core::pack`) or as a folder.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Parser;
use ocirootfs::cli::SourceArgs;
use safefs::atomic::AtomicOutput;
use serde::Serialize;
use sysext_core::cli::{Exit, OutputArgs};
use sysext_core::pack::{self, Format, PackOptions};

use crate::plan::{self, Map, Plan, PlanOptions};
use crate::stage::{self, StageReport};

/// Ship a whole root filesystem as a systemd-sysext image: the rootfs goes under
/// /usr/local/NAME/ and each executable entry gets a launcher at its /usr/... path that runs it
/// with the rootfs as / in a private mount namespace (root: unshare; other users: bwrap, or a
/// user namespace). Units, folders and other files are linked into /usr/.
///
/// The launchers need on the host: /bin/sh, mkdir, ln, id, util-linux unshare and mount, and
/// optionally bwrap. At run time they read ETCMAP, VARMAP, HOMEMAP (host|chroot),
/// FLATWRAP_CHROOT, FLATWRAP_HOST, FLATWRAP_ROOT (run from an unpacked tree) and NOBWRAP=1.
#[derive(Debug, Parser)]
#[command(name = "flatwrap", version, about, long_about)]
pub struct Args {
    /// The root filesystem to ship: a folder (read only; never modified), or a container image
    /// (`registry/name:tag`, `oci:DIR[:TAG]`, `oci-archive:FILE`, `docker-archive:FILE`).
    pub source: String,
    /// The extension name (the image is NAME.raw, the rootfs goes to /usr/local/NAME).
    pub name: String,
    /// Entries inside the rootfs: /usr/... paths keep their place; anything else is
    /// SRC:/usr/TARGET. Executables get launchers; units, folders and other files are linked.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<String>,
    /// Where /etc comes from by default (ETCMAP overrides at run time).
    #[arg(long, value_enum, default_value_t = Map::Host, env = "ETCMAP")]
    pub etc: Map,
    /// Where /var comes from by default (VARMAP overrides at run time).
    #[arg(long, value_enum, default_value_t = Map::Host, env = "VARMAP")]
    pub var: Map,
    /// Where /home and /root come from by default (HOMEMAP overrides at run time).
    #[arg(long, value_enum, default_value_t = Map::Host, env = "HOMEMAP")]
    pub home: Map,
    /// Paths taken from the rootfs, space separated (default: every top-level entry of the
    /// rootfs but /dev /proc /sys /run /tmp /etc /var /home /root); FLATWRAP_CHROOT overrides at
    /// run time.
    #[arg(long, env = "CHROOT", value_name = "LIST")]
    pub chroot: Option<String>,
    /// Host paths bound in, space separated (default "/dev /proc /sys /run /tmp /var/tmp");
    /// missing ones are skipped at run time; FLATWRAP_HOST overrides at run time.
    #[arg(long, env = "HOST", value_name = "LIST")]
    pub host: Option<String>,
    #[command(flatten)]
    pub source_opts: SourceArgs,
    #[command(flatten)]
    pub out: OutputArgs,
    /// Write EXTENSION_RELOAD_MANAGER=1 (set anyway when a unit is among the entries).
    #[arg(long)]
    pub reload_manager: bool,
    /// Print the plan and the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Keep setuid/setgid bits and file capabilities of the rootfs' files (stripped and listed
    /// by default: once merged, they would run with privilege on the host, outside any
    /// sandbox).
    #[arg(long)]
    pub keep_privileges: bool,
}

/// Turns SOURCE into a rootfs folder: a folder is used as it is (read only); a container image
/// (`registry/name:tag`, `oci:DIR[:TAG]`, `oci-archive:F`, `docker-archive:F`) is pulled and
/// unpacked by `ocirootfs` (cached; a temporary unpack is removed when the result is dropped).
pub fn resolve_source(source: &str, opts: &ocirootfs::SourceOptions) -> Result<ocirootfs::Rootfs> {
    ocirootfs::materialize(source, opts).with_context(|| format!("getting a rootfs for {source}"))
}

/// What a run did, for `--json`.
#[derive(Debug, Serialize)]
pub struct Report {
    pub output: PathBuf,
    pub format: Format,
    pub plan: Plan,
    pub stage: StageReport,
    pub pack: Option<pack::PackReport>,
}

/// Runs the command: the report as JSON on stdout with `--json`, else a summary on stderr.
pub fn run(args: Args) -> Result<Exit> {
    let json = args.json;
    let report = build(args)?;
    if json {
        sysext_core::cli::print_json(&report)?;
    } else {
        print_summary(&report);
    }
    Ok(Exit::OK)
}

/// Does the work of a run: source, plan, stage, pack.
pub fn build(args: Args) -> Result<Report> {
    // The name first: nothing is pulled or staged for a name no image may have.
    plan::check_name(&args.name)?;
    args.out.check()?;
    let rootfs = resolve_source(&args.source, &args.source_opts.options(true))?;
    let opts = PlanOptions {
        etc: args.etc,
        var: args.var,
        home: args.home,
        reload_manager: args.reload_manager,
        chroot: args.chroot.as_deref().map(split_list),
        host: args.host.as_deref().map(split_list),
    };
    let plan = plan::plan(&rootfs.path, &args.name, &args.paths, &opts).with_context(|| {
        format!(
            "planning the extension {} from {}",
            args.name,
            rootfs.path.display()
        )
    })?;
    for w in &plan.warnings {
        tracing::warn!("{w}");
    }
    let format = args.out.format();
    let output = args.out.path(&args.name);
    check_output_outside(&output, &rootfs.path)?;
    let stage_opts = stage::StageOptions::new(args.keep_privileges);
    let (stage_report, pack_report) = match format {
        Format::Dir => {
            anyhow::ensure!(
                output.file_name().is_some_and(|n| n == args.name.as_str()),
                "a folder extension must be named after the extension: {} is not {:?} (systemd-sysext takes the name from the folder)",
                output.display(),
                args.name
            );
            let out = AtomicOutput::dir(&output, args.out.force)?;
            let report = stage::stage_with(&plan, out.path(), &stage_opts)
                .with_context(|| format!("writing the extension tree {}", output.display()))?;
            out.commit()?;
            (report, None)
        }
        Format::Raw | Format::Ddi => {
            // Stage beside the output (same filesystem), pack, and drop the staged tree.
            let scratch_name = format!(".{}.flatwrap-tree", args.name);
            let scratch = AtomicOutput::dir(&output.with_file_name(scratch_name), true)?;
            // The scratch tree is packed and removed: files of an image we unpacked are linked.
            let mut stage_opts = stage_opts.clone();
            stage_opts.link_source = rootfs.unpacked();
            let report =
                stage::stage_with(&plan, scratch.path(), &stage_opts).with_context(|| {
                    format!("staging the extension tree in {}", scratch.path().display())
                })?;
            let mut popts = PackOptions::default();
            args.out.apply(&mut popts)?;
            popts.name = Some(args.name.clone());
            let packed = pack::pack(scratch.path(), &output, &popts)
                .with_context(|| format!("packing {}", output.display()))?;
            drop(scratch);
            (report, Some(packed))
        }
    };
    safefs::tree::report_stripped("flatwrap", &stage_report.stripped, "--keep-privileges");
    Ok(Report {
        output,
        format,
        plan,
        stage: stage_report,
        pack: pack_report,
    })
}

fn split_list(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

fn check_output_outside(output: &Path, rootfs: &Path) -> Result<()> {
    let abs = |p: &Path| -> PathBuf {
        let p = if p.is_absolute() {
            p.to_path_buf()
        } else {
            std::env::current_dir().unwrap_or_default().join(p)
        };
        let parent = p.parent().and_then(|d| d.canonicalize().ok());
        match (parent, p.file_name()) {
            (Some(d), Some(n)) => d.join(n),
            _ => p,
        }
    };
    let root = rootfs
        .canonicalize()
        .unwrap_or_else(|_| rootfs.to_path_buf());
    anyhow::ensure!(
        !abs(output).starts_with(&root),
        "output {} lies inside the source rootfs {}; the source is never modified: write elsewhere",
        output.display(),
        rootfs.display()
    );
    Ok(())
}

/// Prints a human summary of a report on stderr.
pub fn print_summary(r: &Report) {
    eprintln!(
        "{}: {} launcher(s), {} link(s), {} files ({} bytes) of the rootfs under /usr/local/{}{}",
        r.output.display(),
        r.stage.launchers.len(),
        r.stage.links.len(),
        r.stage.files,
        r.stage.bytes,
        r.plan.name,
        r.plan
            .architecture
            .as_deref()
            .map(|a| format!(", ARCHITECTURE={a}"))
            .unwrap_or_default()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_upstream_form() {
        let a = Args::try_parse_from([
            "flatwrap",
            "/r",
            "tools",
            "/usr/bin/htop",
            "/bin/busybox:/usr/bin/busybox",
            "--etc",
            "chroot",
            "--format",
            "dir",
        ])
        .unwrap();
        assert_eq!(a.paths, ["/usr/bin/htop", "/bin/busybox:/usr/bin/busybox"]);
        assert_eq!(a.etc, Map::Chroot);
        assert_eq!(a.out.format(), Format::Dir);
        assert!(Args::try_parse_from(["flatwrap", "/r", "tools"]).is_err());
        assert!(Args::try_parse_from(["flatwrap", "/r", "t", "/x", "--etc", "both"]).is_err());
    }
}
