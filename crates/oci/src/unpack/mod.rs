//! Applying layer tarballs to a root directory, safely.
//!
//! See [`plan`] for the decisions (pure, exhaustively tested) and [`fs`]
//! for the shell that carries them out.

pub mod fs;
pub mod guard;
pub mod plan;

pub use fs::{LayerInput, LayerReport, StagedRoot, UnpackError, UnpackOptions, unpack_image};
pub use plan::{Action, EntryError, RootPath};

#[cfg(test)]
mod tests;
