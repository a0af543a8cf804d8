//! The launch policy is a wire type the injector writes and the launcher
//! reads, so it lives in `palisade-common` (`launch`).

pub use palisade_common::launch::*;
