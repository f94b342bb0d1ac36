//! The `relais` command line: a thin layer over the library.

fn main() {}
