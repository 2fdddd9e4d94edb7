//! The `ocirootfs IMAGE FOLDER` command line: clap structs (so tests can `try_parse_from`) and
//! [`run`], which the binary's `main` calls.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;

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
    /// Platform to pick from a multi-platform image: OS/ARCH[/VARIANT], e.g. linux/arm64.
    #[arg(long, env = "OCIROOTFS_PLATFORM")]
    pub platform: Option<String>,
    /// Blob cache folder (default: $XDG_CACHE_HOME/ocirootfs or ~/.cache/ocirootfs).
    #[arg(long, value_name = "DIR", env = "OCIROOTFS_CACHE")]
    pub cache: Option<PathBuf>,
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
    /// Run a shell command inside the rootfs before handing it over (e.g. "apk -U add b3sum").
    /// A non-zero exit leaves FOLDER unwritten and becomes ocirootfs's exit status.
    #[arg(long, value_name = "CMD")]
    pub run: Option<String>,
    /// Replace an existing FOLDER.
    #[arg(long)]
    pub force: bool,
    /// Print the resolved digest, platform and layers as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Runs the command; `Ok(code)` is the process exit status.
pub fn run(args: Args) -> anyhow::Result<i32> {
    let opts = crate::SourceOptions {
        platform: args.platform.clone(),
        cache_dir: args.cache.clone(),
        creds: args.creds.clone(),
        insecure: args.insecure,
        progress: !args.json,
    };
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
            return Ok(status.clamp(1, 255));
        }
        r => r.with_context(|| format!("pulling {} into {}", args.image, args.folder.display()))?,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        tracing::info!(
            "{} {} → {}",
            report.source,
            report.digest.as_deref().unwrap_or(""),
            report.folder.display()
        );
    }
    Ok(0)
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
        assert_eq!(a.platform.as_deref(), Some("linux/arm64"));
        assert!(a.json);
        assert!(Args::try_parse_from(["ocirootfs", "alpine"]).is_err());
    }
}
