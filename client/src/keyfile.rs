//! Secret files (signing keys, tokens) as the directory and the auditor keep them:
//! created owner-only (0600), synced, never overwritten; read back at an exact length.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Why a secret file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file could not be opened, read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The file does not hold a key of the right length.
    #[error("key file {path} holds {len} bytes, expected {expected}")]
    Length {
        /// The file.
        path: String,
        /// What it holds.
        len: usize,
        /// What a key needs.
        expected: usize,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyFileError + '_ {
    move |source| KeyFileError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Reads a secret file of exactly `N` bytes.
pub fn read_secret<const N: usize>(path: &Path) -> Result<[u8; N], KeyFileError> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(N as u64 + 1).read_to_end(&mut bytes))
        .map_err(io(path))?;
    bytes.as_slice().try_into().map_err(|_| KeyFileError::Length {
        path: path.display().to_string(),
        len: bytes.len(),
        expected: N,
    })
}

/// Writes a new file readable by the owner only, synced; never overwrites.
pub fn create_private_file(path: &Path, bytes: &[u8]) -> Result<(), KeyFileError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn private_files_round_trip_and_are_never_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k");
        create_private_file(&path, &[7; 32]).expect("create");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(read_secret::<32>(&path).expect("read"), [7; 32]);
        assert!(matches!(
            read_secret::<16>(&path),
            Err(KeyFileError::Length { len: 17, .. })
        ));
        assert!(create_private_file(&path, &[1; 32]).is_err());
        assert_eq!(read_secret::<32>(&path).expect("read"), [7; 32]);
    }
}
