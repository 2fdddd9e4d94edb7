//! Resolve a [`Source`] into an [`Image`]: its manifest for the wanted platform, its config
//! (`Env`, `WorkingDir`, `diff_ids`) and its layers, ready to be opened in order.
//!
//! - registries: see [`crate::registry`] (the cargo feature `registry`): anonymous bearer
//!   tokens, or credentials from `--creds`, else the first auth file with an entry for the
//!   registry (`$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`,
//!   `~/.config/containers/auth.json`, `$DOCKER_CONFIG/config.json`, `~/.docker/config.json`),
//!   used for every request (token, manifests, index, config, blobs). Plain HTTP for loopback
//!   registries; elsewhere verified HTTPS, or with `insecure` unverified HTTPS and then plain
//!   HTTP. Connection failures, 5xx and 429 are retried with backoff (6 attempts, under 8 s of
//!   waiting); 401/403, 404 and TLS failures are not, and say what to do next.
//!   Layers stream into the [`Cache`] in parallel, each verified while it downloads, and can be
//!   unpacked as soon as they land while later ones are still downloading.
//! - `oci:DIR[:TAG]` (an OCI image layout), `oci-archive:FILE` and `docker-archive:FILE` (both
//!   `docker save` formats) are read in place: archives are indexed once and their members read
//!   by offset, never extracted.
//!
//! Inputs are untrusted: a layout's files are opened with the layout folder as `/` (a link
//! never leads out of it), only regular files are read (a FIFO does not block), JSON
//! documents are read with a limit ([`MAX_DOCUMENT`]), blob sizes declared by descriptors are
//! checked against the files before anything is read, manifests and configs are hashed before
//! they are parsed and layers while they are unpacked. Archive headers go through
//! [`crate::tarbounds`].
//!
//! Indexes, manifests and configs are `oci-spec`'s types (see `model.rs`): Docker schema 2
//! and OCI media types are read alike, Docker schema 1 is refused, and every digest is
//! validated before it is used to build a path. [`parse_manifest`], [`parse_image_config`]
//! and [`parse_docker_manifest`] expose those parsers (for fuzzing).

mod image;
mod local;
mod model;
#[cfg(test)]
mod tests;

pub use image::*;
pub use local::*;
pub use model::*;

use std::io;
use std::path::PathBuf;

use crate::cache::CacheError;
use crate::reference::ReferenceError;

/// Errors from resolving or fetching an image.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{what} in {where_} {problem}; the image is damaged, or was written by a tool that does not follow the image format")]
    Json {
        what: String,
        where_: String,
        problem: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("{} is not a regular file (it is a {kind}); an image layout or archive holds regular files only, so the input is malformed or hostile", path.display())]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("{what} {} has {size} bytes, over the limit of {limit} bytes; the input is malformed or hostile", path.display())]
    TooLarge {
        what: &'static str,
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error("{what} {reference} of {image}: the registry sent more than {limit} bytes, the most read of a {what}; the registry is broken or hostile")]
    DocumentTooLarge {
        what: &'static str,
        reference: String,
        image: String,
        limit: u64,
    },
    #[error("blob {digest} in {where_} has {actual} bytes, its descriptor declares {declared}; the layout is damaged or hostile")]
    SizeMismatch {
        digest: String,
        where_: String,
        declared: u64,
        actual: u64,
    },
    #[error("no image for platform {wanted} in {source_name}; it offers: {offered}. Pass --platform with one of those")]
    Platform {
        wanted: String,
        source_name: String,
        offered: String,
    },
    #[error("{source_name} holds several images ({tags}); name one as {source_name}:TAG")]
    AmbiguousTag { source_name: String, tags: String },
    #[error("tag {tag:?} not found in {source_name}; it holds: {tags}")]
    TagNotFound {
        tag: String,
        source_name: String,
        tags: String,
    },
    #[error("blob {digest} is missing from {where_}")]
    MissingBlob { digest: String, where_: String },
    #[error("blob {digest} from {where_} does not match its digest (got sha256:{actual})")]
    Digest {
        digest: String,
        where_: String,
        actual: String,
    },
    #[error("registry {registry} denied access to {image} without credentials (401/403): the repository needs a login, or does not exist; pass --creds USER:PASSWORD, or log in with `skopeo login {registry}` (or `docker login`; read from $REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json, ~/.docker/config.json)")]
    Unauthorized { registry: String, image: String },
    #[error("registry {registry} refused the credentials from {creds} for {image} (401/403); check the user name and password, and that this user may pull {image}")]
    CredentialsRefused {
        registry: String,
        image: String,
        creds: String,
    },
    #[error("invalid --creds value: expected USER:PASSWORD")]
    CredsFormat,
    #[error("cannot use the registry auth file {}: {problem}; fix or remove it, or pass --creds USER:PASSWORD", path.display())]
    AuthFile { path: PathBuf, problem: String },
    #[error("image {image} not found (manifest unknown): registry {registry} has no tag or digest {reference} in {repository}; check the repository name and the tag (list the tags with `skopeo list-tags docker://{registry}/{repository}`)")]
    NotFound {
        image: String,
        registry: String,
        repository: String,
        reference: String,
    },
    #[error("repository {repository} not found on registry {registry} (name unknown) while pulling {image}; check the image name")]
    RepositoryNotFound {
        image: String,
        registry: String,
        repository: String,
    },
    #[error("registry error for {image}: {message}")]
    Registry { image: String, message: String },
    #[error("cannot reach registry {registry} for {image} after {attempts} attempt(s) over {secs}s: {message}; {hint}")]
    Unreachable {
        registry: String,
        image: String,
        attempts: u32,
        secs: u64,
        message: String,
        hint: String,
    },
    #[error("HTTPS to registry {registry} failed for {image}: {message}; {hint}")]
    Tls {
        registry: String,
        image: String,
        message: String,
        hint: String,
    },
    #[error("cannot set up the registry client")]
    Runtime(#[source] io::Error),
    #[error("a layer download was cancelled")]
    Cancelled,
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Reference(#[from] ReferenceError),
}
