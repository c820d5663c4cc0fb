//! Data directory layout: identity key, store, API address file.
//!
//! ```text
//! DIR/identity.key   protobuf-encoded libp2p ed25519 keypair, mode 0600
//! DIR/store/         the sled store (metamesh-storage)
//! DIR/api.addr       "127.0.0.1:PORT", written by `run`, removed on clean shutdown
//! DIR/listen.addrs   one multiaddr per line, written by `run`
//! ```
//!
//! `DIR` is `--data-dir` / `METAMESH_DATA_DIR`, else the per-user data
//! directory (`~/.local/share/metamesh` on Linux).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use libp2p::identity::Keypair;

/// Largest identity file we read (a protobuf ed25519 keypair is ~68 bytes).
const MAX_IDENTITY_BYTES: u64 = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    pub root: PathBuf,
}

impl DataDir {
    /// The flag/env value, else the per-user data directory, else `./.metamesh`
    /// (a system without a home directory).
    pub fn resolve(opt: Option<PathBuf>) -> DataDir {
        let root = opt.unwrap_or_else(|| {
            directories::ProjectDirs::from("", "", "metamesh")
                .map(|d| d.data_dir().to_path_buf())
                .unwrap_or_else(|| PathBuf::from(".metamesh"))
        });
        DataDir { root }
    }

    pub fn identity_path(&self) -> PathBuf {
        self.root.join("identity.key")
    }

    pub fn store_path(&self) -> PathBuf {
        self.root.join("store")
    }

    pub fn api_addr_path(&self) -> PathBuf {
        self.root.join("api.addr")
    }

    pub fn listen_addrs_path(&self) -> PathBuf {
        self.root.join("listen.addrs")
    }

    /// Create the directory and the identity key if absent; return the key.
    /// Idempotent: an existing key is loaded, never replaced.
    pub fn init(&self) -> Result<Keypair> {
        create_private_dir(&self.root)?;
        let path = self.identity_path();
        if path.exists() {
            return self.load_identity();
        }
        let key = Keypair::generate_ed25519();
        let bytes = key
            .to_protobuf_encoding()
            .map_err(|e| anyhow!("encoding the new identity key: {e}"))?;
        write_private_file(&path, &bytes)
            .with_context(|| format!("writing the identity key {}", path.display()))?;
        Ok(key)
    }

    /// Load the identity key; a clear error when there is none.
    pub fn load_identity(&self) -> Result<Keypair> {
        let path = self.identity_path();
        let meta = match fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "no identity in {}: run `metamesh init` (or pass --data-dir / METAMESH_DATA_DIR)",
                self.root.display()
            ),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        if meta.len() > MAX_IDENTITY_BYTES {
            bail!(
                "{} is {} bytes: not an identity key (expected a protobuf ed25519 keypair)",
                path.display(),
                meta.len()
            );
        }
        warn_if_readable_by_others(&path, &meta);
        let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let key = Keypair::from_protobuf_encoding(&bytes).map_err(|e| {
            anyhow!(
                "{} is not a valid identity key ({e}); move it away and run `metamesh init`",
                path.display()
            )
        })?;
        if key.clone().try_into_ed25519().is_err() {
            bail!(
                "{} holds a non-ed25519 key; metamesh needs ed25519",
                path.display()
            );
        }
        Ok(key)
    }

    /// Read the API address written by a running node, if any.
    pub fn read_api_addr(&self) -> Option<String> {
        let s = fs::read_to_string(self.api_addr_path()).ok()?;
        let line = s.lines().next()?.trim();
        (!line.is_empty()).then(|| line.to_string())
    }

    /// Read the listen addresses written by a running node (empty if none).
    pub fn read_listen_addrs(&self) -> Vec<String> {
        fs::read_to_string(self.listen_addrs_path())
            .map(|s| {
                s.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn create_private_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating the data directory {}", dir.display()))
    }
    #[cfg(not(unix))]
    {
        fs::create_dir_all(dir)
            .with_context(|| format!("creating the data directory {}", dir.display()))
    }
}

/// Write a file readable by the owner only, atomically (temp file + rename),
/// and never over an existing file.
fn write_private_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("key.tmp");
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp)?;
    #[cfg(unix)]
    {
        // The mode above is filtered by the umask; make sure it is 0600.
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(fs::Permissions::from_mode(0o600))?;
    }
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    // hard_link fails if the target exists, so two concurrent `init`s cannot
    // overwrite each other's key.
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    linked?;
    Ok(())
}

fn warn_if_readable_by_others(path: &Path, meta: &fs::Metadata) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                "{} is readable by other users (mode {:o}); run `chmod 600` on it",
                path.display(),
                meta.permissions().mode() & 0o777
            );
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (path, meta);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn init_is_idempotent_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let dd = DataDir::resolve(Some(dir.path().join("d")));
        assert!(dd
            .load_identity()
            .unwrap_err()
            .to_string()
            .contains("metamesh init"));
        let k1 = dd.init().unwrap();
        let k2 = dd.init().unwrap();
        assert_eq!(k1.public().to_peer_id(), k2.public().to_peer_id());
        assert_eq!(dd.load_identity().unwrap().public(), k1.public());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dd.identity_path())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn garbage_identity_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let dd = DataDir::resolve(Some(dir.path().to_path_buf()));
        fs::write(dd.identity_path(), b"not a key").unwrap();
        let e = dd.load_identity().unwrap_err().to_string();
        assert!(e.contains("not a valid identity key"), "{e}");
    }
}
