//! Flix: relocate programs and their library closure into a self-contained extension.
