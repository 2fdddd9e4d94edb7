//! The `ocirootfs IMAGE FOLDER` and `ocirootfs cache list|prune` command line: clap structs (so
//! tests can `try_parse_from`) and [`run`], which the binary's `main` calls.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use sysext_core::cli::Exit;

/// The source options of every command that reads an image (ocirootfs, flix, flatwrap):
/// `--platform` and the [`RegistryArgs`]. Flatten it into the command's clap struct.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SourceArgs {
    /// Platform to pick from a multi-platform image: OS/ARCH[/VARIANT], e.g. linux/arm64
    /// (default: this machine's).
    #[arg(long, value_name = "PLATFORM", env = "OCIROOTFS_PLATFORM")]
    pub platform: Option<String>,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// How to reach registries and where to keep blobs: `--creds`, `--insecure`, `--cache`,
/// `--cache-max`. Also
/// used alone where the platform is chosen per job (`sysext bake`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RegistryArgs {
    /// Registry credentials USER:PASSWORD (default: the login in $REGISTRY_AUTH_FILE,
    /// $XDG_RUNTIME_DIR/containers/auth.json, ~/.config/containers/auth.json,
    /// $DOCKER_CONFIG/config.json or ~/.docker/config.json, as `skopeo login` or `docker login`
    /// write them; else anonymous). The environment variable keeps the password out of `ps`.
    #[arg(
        long,
        value_name = "USER:PASSWORD",
        env = "OCIROOTFS_CREDS",
        hide_env_values = true
    )]
    pub creds: Option<String>,
    /// Accept a registry's TLS certificate unverified, or use plain HTTP when the registry does
    /// not speak TLS. Without it, loopback registries get plain HTTP and others verified HTTPS.
    #[arg(long)]
    pub insecure: bool,
    /// Blob cache folder (default: $XDG_CACHE_HOME/ocirootfs or ~/.cache/ocirootfs).
    #[arg(long, value_name = "DIR", env = "OCIROOTFS_CACHE")]
    pub cache: Option<PathBuf>,
    /// The cache's size limit (default: 10G): bytes, or K, M, G, T (powers of 1024), e.g.
    /// 300M. Before and after a pull, the entries used least recently are removed until the
    /// cache is under it; entries a running pull uses are never removed.
    #[arg(long, value_name = "SIZE", env = "OCIROOTFS_CACHE_MAX", value_parser = crate::cache::parse_size)]
    pub cache_max: Option<u64>,
}

impl SourceArgs {
    /// The source options these flags ask for; `progress` turns on progress bars (shown only
    /// on a terminal).
    pub fn options(&self, progress: bool) -> crate::SourceOptions {
        let mut opts = self.registry.options(progress);
        opts.platform = self.platform.clone();
        opts
    }
}

impl RegistryArgs {
    /// The source options these flags ask for, with the host's platform.
    pub fn options(&self, progress: bool) -> crate::SourceOptions {
        crate::SourceOptions {
            creds: self.creds.clone(),
            insecure: self.insecure,
            cache_dir: self.cache.clone(),
            cache_max: self.cache_max,
            progress,
            ..Default::default()
        }
    }
}

/// Pull a container image into a root filesystem folder, without a container daemon.
///
/// IMAGE is a registry reference (`alpine:latest`, `host:port/name:tag`, `name@sha256:...`),
/// `oci:DIR[:TAG]`, `oci-archive:FILE`, `docker-archive:FILE`, or a folder (copied).
/// `ocirootfs cache list|prune` shows and trims the cache.
//
// `cache` is a subcommand only as the first argument (`args_conflicts_with_subcommands`), so
// every pull written before it existed keeps its meaning (`ocirootfs --force alpine cache`
// pulls into the folder `cache`); an image named `cache` is `cache:latest`. A separate binary
// or `--cache-list` flags would split or overload the one command line.
#[derive(Debug, Parser)]
#[command(
    name = "ocirootfs",
    version,
    subcommand_negates_reqs = true,
    args_conflicts_with_subcommands = true
)]
pub struct Args {
    /// The image to pull.
    #[arg(required = true)]
    pub image: Option<String>,
    /// The folder to create; an existing non-empty folder needs --force.
    #[arg(required = true)]
    pub folder: Option<PathBuf>,
    #[command(flatten)]
    pub source: SourceArgs,
    /// Run a shell command inside the rootfs before handing it over (e.g. "apk -U add b3sum").
    /// A non-zero exit leaves FOLDER unwritten and becomes ocirootfs's exit status.
    #[arg(long, value_name = "CMD")]
    pub run: Option<String>,
    /// Replace an existing FOLDER.
    #[arg(short, long)]
    pub force: bool,
    /// Print the resolved digest, platform and layers as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// `ocirootfs cache ...`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Show or trim the cache (blobs and unpacked root filesystems).
    #[command(subcommand)]
    Cache(CacheCommand),
}

/// What to do with the cache.
#[derive(Debug, clap::Subcommand)]
pub enum CacheCommand {
    /// List the entries, least recently used first, with their size and last use, the total
    /// and the limit (--json: on stdout).
    List {
        #[command(flatten)]
        cache: CacheArgs,
    },
    /// Remove the entries used least recently until the cache is under the limit (--max, else
    /// --cache-max, else 10G), or every entry with --all. Entries a running pull uses stay.
    Prune {
        #[command(flatten)]
        cache: CacheArgs,
        /// The size to prune to (bytes, or K, M, G, T).
        #[arg(long, value_name = "SIZE", value_parser = crate::cache::parse_size, conflicts_with = "all")]
        max: Option<u64>,
        /// Remove every entry not in use.
        #[arg(long)]
        all: bool,
    },
}

/// The options of `ocirootfs cache ...`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CacheArgs {
    /// Cache folder (default: $XDG_CACHE_HOME/ocirootfs or ~/.cache/ocirootfs).
    #[arg(long, value_name = "DIR", env = "OCIROOTFS_CACHE")]
    pub cache: Option<PathBuf>,
    /// The cache's size limit (default: 10G).
    #[arg(long, value_name = "SIZE", env = "OCIROOTFS_CACHE_MAX", value_parser = crate::cache::parse_size)]
    pub cache_max: Option<u64>,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Runs the command; returns the exit status (that of `--run`'s command when it fails).
pub fn run(args: Args) -> anyhow::Result<Exit> {
    if let Some(Command::Cache(c)) = args.command {
        return run_cache(c);
    }
    let (Some(image), Some(folder)) = (args.image, args.folder) else {
        anyhow::bail!("IMAGE and FOLDER are required");
    };
    let opts = args.source.options(!args.json);
    let res = crate::pull_and_run(&image, &folder, &opts, args.force, args.run.as_deref());
    let report = match res {
        Err(crate::Error::RunFailed {
            command,
            status,
            folder,
        }) => {
            eprintln!(
                "ocirootfs: the command `{command}` exited with status {status}; {} was not written",
                folder.display()
            );
            return Ok(Exit::code(status.clamp(1, 255)));
        }
        r => r.with_context(|| format!("pulling {image} into {}", folder.display()))?,
    };
    if args.json {
        sysext_core::cli::print_json(&report)?;
    } else {
        tracing::info!(
            "{} {} → {}",
            report.source,
            report.digest.as_deref().unwrap_or(""),
            report.folder.display()
        );
    }
    Ok(Exit::OK)
}

/// `ocirootfs cache list|prune`.
fn run_cache(c: CacheCommand) -> anyhow::Result<Exit> {
    use crate::cache::{human_size, utc_minutes, Cache, DEFAULT_MAX};
    let (args, prune) = match c {
        CacheCommand::List { cache } => (cache, None),
        CacheCommand::Prune { cache, max, all } => (cache, Some((max, all))),
    };
    let dir = args.cache.unwrap_or_else(crate::cache::default_dir);
    let limit = args.cache_max.unwrap_or(DEFAULT_MAX);
    let json = args.json;
    let cache = Cache::open(&dir)
        .with_context(|| format!("opening the cache {}", dir.display()))?
        .with_max(limit);
    let line = |e: &crate::cache::Entry| {
        format!(
            "  {:<6} {}  {:>9}  {}{}",
            serde_json::to_value(e.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            e.digest,
            human_size(e.bytes),
            utc_minutes(e.last_used),
            if e.in_use { "  (in use)" } else { "" }
        )
    };
    match prune {
        None => {
            let l = cache.list();
            if json {
                sysext_core::cli::print_json(&l)?;
            }
            let mut text = format!(
                "{}: {} entries, {} of {} (least recently used first; last use in UTC)\n",
                dir.display(),
                l.entries.len(),
                human_size(l.total),
                human_size(l.limit)
            );
            for e in &l.entries {
                text.push_str(&line(e));
                text.push('\n');
            }
            eprint!("{text}");
        }
        Some((max, all)) => {
            let p = cache
                .prune(
                    if all {
                        None
                    } else {
                        Some(max.unwrap_or(limit))
                    },
                    0,
                )
                .with_context(|| format!("pruning the cache {}", dir.display()))?;
            if json {
                sysext_core::cli::print_json(&p)?;
            }
            let mut text = format!(
                "{}: removed {} entries ({}), {} left",
                dir.display(),
                p.removed.len(),
                human_size(p.freed),
                human_size(p.total)
            );
            if !p.in_use.is_empty() {
                text.push_str(&format!(
                    "; {} entries in use by a running pull were kept",
                    p.in_use.len()
                ));
            }
            eprintln!("{text}");
            for e in &p.removed {
                eprintln!("{}", line(e));
            }
        }
    }
    Ok(Exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        let a = Args::try_parse_from([
            "ocirootfs",
            "alpine",
            "out",
            "--platform",
            "linux/arm64",
            "--run",
            "true",
            "--json",
        ])
        .unwrap();
        assert_eq!(a.image.as_deref(), Some("alpine"));
        assert_eq!(a.source.platform.as_deref(), Some("linux/arm64"));
        assert!(a.json);
        assert!(Args::try_parse_from(["ocirootfs", "alpine"]).is_err());
        assert!(Args::try_parse_from(["ocirootfs"]).is_err());
    }

    #[test]
    fn cache_is_a_subcommand_and_images_keep_working() {
        let a = Args::try_parse_from(["ocirootfs", "cache", "list", "--json"]).unwrap();
        assert!(a.image.is_none());
        assert!(matches!(
            a.command,
            Some(Command::Cache(CacheCommand::List {
                cache: CacheArgs { json: true, .. }
            }))
        ));
        let a = Args::try_parse_from([
            "ocirootfs",
            "cache",
            "prune",
            "--max",
            "2G",
            "--cache",
            "/c",
        ])
        .unwrap();
        assert!(matches!(
            a.command,
            Some(Command::Cache(CacheCommand::Prune { max: Some(m), all: false, cache: CacheArgs { cache: Some(ref c), .. } }))
                if m == 2 << 30 && c == std::path::Path::new("/c")
        ));
        assert!(
            Args::try_parse_from(["ocirootfs", "cache", "prune", "--all", "--max", "1"]).is_err()
        );
        // A folder named `cache`, images whose name starts with it, and `cache` after any
        // other argument: pulls, as before the subcommand existed.
        for argv in [
            &["ocirootfs", "alpine", "cache"][..],
            &["ocirootfs", "alpine", "--force", "cache"],
            &["ocirootfs", "cache:latest", "out"],
            &["ocirootfs", "docker.io/library/cache", "out"],
            &["ocirootfs", "--force", "cache", "list"],
        ] {
            let a = Args::try_parse_from(argv).unwrap();
            assert!(a.command.is_none(), "{argv:?}");
            assert!(a.image.is_some() && a.folder.is_some(), "{argv:?}");
        }
        let a = Args::try_parse_from(["ocirootfs", "x", "y", "--cache-max", "300M"]).unwrap();
        assert_eq!(a.source.options(false).cache_max, Some(300 << 20));
        assert!(Args::try_parse_from(["ocirootfs", "x", "y", "--cache-max", "lots"]).is_err());
    }

    #[test]
    fn source_flags_fill_the_options() {
        let a = Args::try_parse_from([
            "ocirootfs",
            "h:5000/x:1",
            "out",
            "--creds",
            "u:p",
            "--insecure",
            "--cache",
            "/c",
            "--platform",
            "linux/arm64/v8",
        ])
        .unwrap();
        let o = a.source.options(true);
        assert_eq!(o.creds.as_deref(), Some("u:p"));
        assert!(o.insecure && o.progress);
        assert_eq!(o.cache_dir.as_deref(), Some(std::path::Path::new("/c")));
        assert_eq!(o.platform.as_deref(), Some("linux/arm64/v8"));
        // The registry group alone keeps the host's platform.
        let r = a.source.registry.options(false);
        assert_eq!(r.platform, None);
        assert_eq!(r.creds.as_deref(), Some("u:p"));
        assert!(!r.progress);
    }
}
