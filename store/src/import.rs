//! Compatibility import of `.cor` final-key files (as produced by other QKD stacks).
//!
//! Both KMEs of a link hold files with the same names and bytes. Each file becomes one block:
//! all its bytes are key material (bit order as DESIGN §4) and its block ID is the file's base
//! name, so both KMEs derive the same ID. Files are imported in byte order of their base names,
//! whatever order they are given in, so both KMEs append the same blocks in the same order.
//! Importing a file again is a no-op ([`ImportOutcome::AlreadyPresent`]); a file whose name is
//! already used by different material is refused.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{BlockId, BlockInfo, NewBlock, Store, StoreError};

/// Errors importing key files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// A file could not be read.
    #[error("cannot read key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file name cannot serve as a block ID (no base name, not UTF-8, too long).
    #[error("key file {path} has no usable name for a block ID: {reason}")]
    BadFileName {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The file is empty.
    #[error("key file {0} is empty; expected key material")]
    Empty(PathBuf),
    /// A block with this name already exists with different material.
    #[error("key file {path}: block '{block_id}' already exists with different material")]
    Conflict {
        /// The file.
        path: PathBuf,
        /// The block ID.
        block_id: String,
    },
    /// The store refused the block.
    #[error("storing key file {path}: {source}")]
    Store {
        /// The file.
        path: PathBuf,
        /// The store error.
        source: StoreError,
    },
}

/// What happened to one file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ImportOutcome {
    /// Appended as a new block.
    Imported(BlockInfo),
    /// The same block (same ID, same digest) was already in the store.
    AlreadyPresent {
        /// The block ID.
        block_id: BlockId,
    },
}

/// The result of an import, file by file in import order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportReport {
    /// The link.
    pub link: String,
    /// Each file and its outcome.
    pub files: Vec<(PathBuf, ImportOutcome)>,
}

fn block_id_of(path: &Path) -> Result<BlockId, ImportError> {
    let bad = |reason: &str| ImportError::BadFileName {
        path: path.to_path_buf(),
        reason: reason.into(),
    };
    let name = path.file_name().ok_or_else(|| bad("no file name"))?;
    let name = name.to_str().ok_or_else(|| bad("not UTF-8"))?;
    BlockId::new(name).map_err(|e| bad(&e.to_string()))
}

/// Imports `.cor` files for `link`, one block each, in base-name order; each block is durable
/// before the next file is read. Stops at the first error (files before it stay imported;
/// running the import again is safe).
pub fn import_cor_files(
    store: &Store,
    link: &str,
    files: &[PathBuf],
) -> Result<ImportReport, ImportError> {
    let mut named = files
        .iter()
        .map(|p| block_id_of(p).map(|id| (id, p.clone())))
        .collect::<Result<Vec<_>, _>>()?;
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let mut report = ImportReport {
        link: link.to_owned(),
        files: Vec::with_capacity(named.len()),
    };
    for (id, path) in named {
        let bytes = Zeroizing::new(std::fs::read(&path).map_err(|source| ImportError::Io {
            path: path.clone(),
            source,
        })?);
        if bytes.is_empty() {
            return Err(ImportError::Empty(path));
        }
        let block = NewBlock::from_bytes(link, id.clone(), bytes).actor("import");
        let outcome = match store.append(block) {
            Ok(info) => ImportOutcome::Imported(info),
            Err(StoreError::DuplicateBlock {
                same_material: true,
                ..
            }) => ImportOutcome::AlreadyPresent { block_id: id },
            Err(StoreError::DuplicateBlock {
                same_material: false,
                ..
            }) => {
                return Err(ImportError::Conflict {
                    path,
                    block_id: id.to_string(),
                });
            }
            Err(source) => return Err(ImportError::Store { path, source }),
        };
        report.files.push((path, outcome));
    }
    Ok(report)
}
