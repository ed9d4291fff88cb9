//! The state directory: atomic, owner-only files. Every write goes to a temporary file that is
//! fsynced, renamed over the target and followed by an fsync of the directory, so a crash or
//! power cut at any moment leaves either the old or the new file, never a torn one.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use rand::RngCore as _;

const TOKEN_FILE: &str = "api-token";

/// Creates `dir` (mode 0700) if needed; one that already exists open to others (created by
/// hand, or by an older tool) is restricted to its owner, since it holds the node's keys.
pub(crate) fn ensure_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() && !dir.is_dir() {
        bail!("state directory {} is not a directory", dir.display());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("Failed to create state directory {}", dir.display()))?;
    restrict(dir, 0o700)
}

/// Reads a state file, first restricting it to its owner (0600) if others may read it.
pub(crate) fn read_private(path: &Path) -> anyhow::Result<Vec<u8>> {
    restrict(path, 0o600)?;
    fs::read(path).with_context(|| format!("Failed to read {}", path.display()))
}

/// Clears the group and other bits of `path` (to `mode`) if any are set, with a warning.
fn restrict(path: &Path, mode: u32) -> anyhow::Result<()> {
    let found = fs::metadata(path)
        .with_context(|| format!("Failed to read {}", path.display()))?
        .permissions()
        .mode()
        & 0o777;
    if found & 0o077 != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .with_context(|| format!("Failed to restrict {} to its owner", path.display()))?;
        tracing::warn!(
            path = %path.display(),
            "was mode {found:o}, open to others; restricted to {mode:o}"
        );
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically with mode 0600.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?;
    let tmp: PathBuf = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> anyhow::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("Failed to write {}", path.display()))
}

/// The API bearer token in `dir`, generated (32 random bytes, hex) and stored 0600 on first use.
pub(crate) fn api_token(dir: &Path) -> anyhow::Result<String> {
    ensure_dir(dir)?;
    let path = dir.join(TOKEN_FILE);
    if !path.exists() {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        write_atomic(&path, format!("{token}\n").as_bytes())?;
        return Ok(token);
    }
    let bytes = read_private(&path)?;
    let token = String::from_utf8_lossy(&bytes).trim().to_string();
    if token.len() < 32 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!(
            "{}: not a valid API token (delete it to generate a new one)",
            path.display()
        );
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("constella-state-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn token_is_created_once_with_owner_only_mode() {
        let dir = scratch("token");
        let first = api_token(&dir).expect("created");
        assert_eq!(first.len(), 64);
        assert_eq!(api_token(&dir).expect("read back"), first);
        let mode = fs::metadata(dir.join(TOKEN_FILE))
            .expect("exists")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = fs::metadata(&dir).expect("exists").permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o700);
        fs::write(dir.join(TOKEN_FILE), "short").expect("write");
        assert!(
            api_token(&dir)
                .expect_err("rejected")
                .to_string()
                .contains("not a valid API token")
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_directory_or_file_open_to_others_is_restricted_and_a_file_is_no_directory() {
        let dir = scratch("lax");
        fs::create_dir_all(&dir).expect("dir");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).expect("chmod");
        let secret = dir.join("secrets.json");
        fs::write(&secret, "{}").expect("write");
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o644)).expect("chmod");
        ensure_dir(&dir).expect("kept");
        assert_eq!(read_private(&secret).expect("read"), b"{}");
        let mode = |p: &Path| fs::metadata(p).expect("exists").permissions().mode() & 0o777;
        assert_eq!((mode(&dir), mode(&secret)), (0o700, 0o600));
        let refused = ensure_dir(&secret).expect_err("a file");
        assert!(
            refused.to_string().contains("is not a directory"),
            "{refused}"
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_file() {
        let dir = scratch("atomic");
        ensure_dir(&dir).expect("dir");
        let path = dir.join("state.json");
        write_atomic(&path, b"one").expect("first");
        write_atomic(&path, b"two").expect("second");
        assert_eq!(fs::read(&path).expect("read"), b"two");
        let names: Vec<_> = fs::read_dir(&dir)
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, [std::ffi::OsString::from("state.json")]);
        let _ = fs::remove_dir_all(&dir);
    }
}
