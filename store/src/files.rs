//! The store's files and directories: created owner-only from the first byte (directories
//! 0700, files 0600), and refused at open when group or others have any access.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::OpenError;

/// Mode of new directories.
pub(crate) const DIR_MODE: u32 = 0o700;
/// Mode of new files.
pub(crate) const FILE_MODE: u32 = 0o600;

/// Creates `dir` and any missing parents, owner-only (existing ones are left as they are).
pub(crate) fn create_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// Makes an (empty, new-store) directory owner-only.
pub(crate) fn make_private_dir(dir: &Path) -> io::Result<()> {
    let mode = std::fs::metadata(dir)?.permissions().mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & !0o077))?;
    }
    Ok(())
}

/// Opens or creates a file, owner-only when created, read-write, keeping its contents.
pub(crate) fn open_or_create(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .open(path)
}

/// `fsync` of a directory (after creating or renaming a file in it).
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir).and_then(|d| d.sync_all())
}

/// Refuses `path` (which `store_dir` contains, or is) if group or others have any permission
/// bit on it. A missing path is fine.
pub(crate) fn check_private(path: &Path, store_dir: &Path) -> Result<(), OpenError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(OpenError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(OpenError::InsecurePermissions {
            path: path.to_path_buf(),
            mode,
            fix: format!("chmod -R go-rwx {}", store_dir.display()),
        });
    }
    Ok(())
}
