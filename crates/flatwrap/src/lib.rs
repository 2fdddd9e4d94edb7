//! Flatwrap: ship a whole root filesystem as an extension with namespace launchers.
