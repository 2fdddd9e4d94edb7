//! The `ocirootfs IMAGE FOLDER` command line: clap structs (so tests can `try_parse_from`) and
//! [`run`], which the binary's `main` calls.

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

/// How to reach registries and where to keep blobs: `--creds`, `--insecure`, `--cache`. Also
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
            progress,
            ..Default::default()
        }
    }
}

/// Pull a container image into a root filesystem folder, without a container daemon.
///
/// IMAGE is a registry reference (`alpine:latest`, `host:port/name:tag`, `name@sha256:...`),
/// `oci:DIR[:TAG]`, `oci-archive:FILE`, `docker-archive:FILE`, or a folder (copied).
#[derive(Debug, Parser)]
#[command(name = "ocirootfs", version)]
pub struct Args {
    /// The image to pull.
    pub image: String,
    /// The folder to create; an existing non-empty folder needs --force.
    pub folder: PathBuf,
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
}

/// Runs the command; returns the exit status (that of `--run`'s command when it fails).
pub fn run(args: Args) -> anyhow::Result<Exit> {
    let opts = args.source.options(!args.json);
    let res = crate::pull_and_run(
        &args.image,
        &args.folder,
        &opts,
        args.force,
        args.run.as_deref(),
    );
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
        r => r.with_context(|| format!("pulling {} into {}", args.image, args.folder.display()))?,
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
        assert_eq!(a.image, "alpine");
        assert_eq!(a.source.platform.as_deref(), Some("linux/arm64"));
        assert!(a.json);
        assert!(Args::try_parse_from(["ocirootfs", "alpine"]).is_err());
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
