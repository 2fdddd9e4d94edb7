//! Flatwrap: ship a whole root filesystem as a systemd-sysext extension with namespace
//! launchers.
//!
//! - [`plan`]: entries (launcher or link, and their place under `/usr`), the rootfs' top-level
//!   layout, the `/etc` `/var` `/home` mapping, the architecture — validated before any write.
//! - [`wrapper`]: the generated POSIX sh launchers and their shared helper (what the host
//!   needs, and how a program is run: see the module docs).
//! - [`stage`]: the extension tree: the rootfs copied under `usr/local/NAME/`, launchers,
//!   links, the release file.
//! - [`cli`]: `flatwrap SOURCE NAME PATH...` (clap), writing `NAME.raw` or a folder.

pub mod cli;
pub mod plan;
pub mod stage;
pub mod wrapper;
