//! `raw_stream`: the QKD device driver hands raw blocks to the KME over a Unix socket instead of
//! files. Each block the driver sends is spooled durably into the link's raw directory (a
//! private temporary file, synced, then renamed to its name) before the KME acknowledges it, so
//! a block acknowledged is never lost, and from there it is handled like a `raw_dir` file.
//!
//! Framing (all integers little-endian), repeated on one connection:
//! - driver: `u32 name_len`, `name` (UTF-8, 1 to 100 bytes of `[A-Za-z0-9._-]`, not starting
//!   with `.`), `u64 byte_len` (at most 2^27), `byte_len` bytes of raw key (bit `i` is bit
//!   `i % 8` of byte `i / 8`);
//! - KME: one status byte: `0` spooled; otherwise `1`, `u32 len` and a UTF-8 message, and the
//!   connection stays usable unless the frame itself was malformed.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

use super::ledger::{private_dir, sync_dir, write_private};
use super::raw::{spool_paths, valid_file_name};

/// Largest block a driver may send in one frame, in bytes (2^30 bits).
pub(crate) const MAX_STREAM_BYTES: u64 = 1 << 27;

/// Listens on `socket` and spools blocks into `dir` until stopped.
pub(crate) async fn serve(socket: PathBuf, dir: PathBuf, mut stop: watch::Receiver<bool>) {
    if let Err(e) = private_dir(&dir) {
        tracing::error!(error = %e, "raw stream spool");
        return;
    }
    let _ = std::fs::remove_file(&socket);
    let listener = match UnixListener::bind(&socket) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(socket = %socket.display(), error = %e, "raw stream socket");
            return;
        }
    };
    // Only this KME's user (the driver runs as it, or is let in by the operator): anyone who
    // can connect can feed raw key.
    if let Err(e) = std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600)) {
        tracing::error!(socket = %socket.display(), error = %e, "securing the raw stream socket");
        return;
    }
    loop {
        let conn = tokio::select! {
            c = listener.accept() => c,
            _ = stop.changed() => break,
        };
        if let Ok((s, _)) = conn {
            let dir = dir.clone();
            tokio::spawn(async move {
                if let Err(e) = driver(s, &dir).await {
                    tracing::warn!(error = %e, "raw stream driver connection");
                }
            });
        }
    }
    let _ = std::fs::remove_file(&socket);
}

async fn driver(mut s: UnixStream, dir: &Path) -> std::io::Result<()> {
    loop {
        let name_len = match s.read_u32_le().await {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        if name_len == 0 || name_len > 100 {
            return refuse(
                &mut s,
                &format!("name of {name_len} bytes; expected 1 to 100"),
            )
            .await;
        }
        let mut name = vec![0u8; name_len as usize];
        s.read_exact(&mut name).await?;
        let len = s.read_u64_le().await?;
        if len == 0 || len > MAX_STREAM_BYTES {
            return refuse(&mut s, &format!("block of {len} bytes; expected 1 to 2^27")).await;
        }
        let mut data = zeroize::Zeroizing::new(vec![0u8; len as usize]);
        s.read_exact(&mut data).await?;
        let name = match String::from_utf8(name) {
            Ok(n) if valid_file_name(&n) => n,
            _ => {
                reply(
                    &mut s,
                    Some("block name must be 1 to 100 bytes of [A-Za-z0-9._-]"),
                )
                .await?;
                continue;
            }
        };
        let dir = dir.to_path_buf();
        let spooled = tokio::task::spawn_blocking(move || spool(&dir, &name, &data))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        reply(&mut s, spooled.err().as_deref()).await?;
    }
}

fn spool(dir: &Path, name: &str, data: &[u8]) -> Result<(), String> {
    let (path, part) = spool_paths(dir, name);
    if path.exists() {
        return Err(format!("a raw block named {name:?} is already spooled"));
    }
    write_private(&part, data)?;
    std::fs::rename(&part, &path).map_err(|e| format!("spooling {name}: {e}"))?;
    sync_dir(dir)
}

async fn reply(s: &mut UnixStream, error: Option<&str>) -> std::io::Result<()> {
    match error {
        None => s.write_all(&[0]).await,
        Some(m) => {
            let mut out = vec![1];
            out.extend((m.len() as u32).to_le_bytes());
            out.extend(m.as_bytes());
            s.write_all(&out).await
        }
    }
}

async fn refuse(s: &mut UnixStream, why: &str) -> std::io::Result<()> {
    reply(s, Some(why)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn send(s: &mut UnixStream, name: &str, data: &[u8]) -> Vec<u8> {
        let mut f = (name.len() as u32).to_le_bytes().to_vec();
        f.extend(name.as_bytes());
        f.extend((data.len() as u64).to_le_bytes());
        f.extend(data);
        s.write_all(&f).await.unwrap();
        let status = s.read_u8().await.unwrap();
        if status == 0 {
            return Vec::new();
        }
        let n = s.read_u32_le().await.unwrap();
        let mut m = vec![0u8; n as usize];
        s.read_exact(&mut m).await.unwrap();
        m
    }

    #[tokio::test]
    async fn blocks_are_spooled_durably_and_bad_frames_get_a_reason() {
        let lab = tempfile::tempdir().unwrap();
        let (sock, dir) = (lab.path().join("drv.sock"), lab.path().join("spool"));
        let (_tx, rx) = watch::channel(false);
        tokio::spawn(serve(sock.clone(), dir.clone(), rx));
        let mut s = loop {
            match UnixStream::connect(&sock).await {
                Ok(s) => break s,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            }
        };
        let mode = std::fs::metadata(&sock).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(send(&mut s, "b1", b"0123").await.is_empty());
        assert_eq!(std::fs::read(dir.join("b1")).unwrap(), b"0123");
        let again = String::from_utf8(send(&mut s, "b1", b"x").await).unwrap();
        assert!(again.contains("already spooled"), "{again}");
        let bad = String::from_utf8(send(&mut s, "../x", b"x").await).unwrap();
        assert!(bad.contains("A-Za-z0-9"), "{bad}");
        assert!(send(&mut s, "b2", b"z").await.is_empty());
        // A frame too large is refused and the connection closed.
        s.write_all(&1u32.to_le_bytes()).await.unwrap();
        s.write_all(b"c").await.unwrap();
        s.write_all(&(MAX_STREAM_BYTES + 1).to_le_bytes())
            .await
            .unwrap();
        assert_eq!(s.read_u8().await.unwrap(), 1);
    }
}
