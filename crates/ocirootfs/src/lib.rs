//! Pull container images from registries and local archives into a root filesystem folder.
