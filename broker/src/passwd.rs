//! Password files: one `username:hash` per line, as `mosquitto_passwd`
//! writes them, with the hash an Argon2id PHC string
//! (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`). Blank lines and lines
//! starting with `#` are kept as they are.
//!
//! Argon2 is slow and memory-hard on purpose, so that a stolen file is
//! expensive to crack; the broker therefore verifies on the blocking pool,
//! a few at a time, never on an async worker.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

/// A password file that cannot be used; the message names the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswdError {
    #[error("{path}: cannot read: {reason}")]
    Read { path: String, reason: String },
    #[error("{path}: cannot write: {reason}")]
    Write { path: String, reason: String },
    #[error("line {line}: {message}")]
    Line { line: usize, message: String },
    #[error("{0}")]
    Invalid(String),
}

/// The lines of a password file, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PasswordEntries {
    lines: Vec<Line>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Line {
    /// Blank or `#` comment, kept verbatim.
    Other(String),
    User {
        name: String,
        hash: String,
    },
}

/// The outcome of checking a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verified {
    Yes,
    UnknownUser,
    WrongPassword,
}

/// A hash of a password nobody has, checked for unknown users so that the
/// answer takes as long as for a known one.
const DECOY: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$ZGVjb3lkZWNveWRlY295$0ZC0+qNg0bHCj+3QfGXCnA1Dn3iB8hWKmBNxXWvUmnw";

/// Checks a username for the file format.
pub fn check_username(name: &str) -> Result<(), PasswdError> {
    if name.is_empty() || name.contains(':') || name.contains(['\n', '\r']) {
        return Err(PasswdError::Invalid(format!(
            "'{name}' is not a valid username: it must be non-empty, without ':' or line breaks"
        )));
    }
    Ok(())
}

/// Hashes `password` with Argon2id and a fresh random salt.
pub fn hash_password(password: &str) -> Result<String, PasswdError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|err| PasswdError::Invalid(format!("cannot hash the password: {err}")))
}

impl PasswordEntries {
    /// Parses a password file; every user line needs a valid PHC hash.
    pub fn parse(text: &str) -> Result<Self, PasswdError> {
        let mut lines = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim_end_matches('\r');
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                lines.push(Line::Other(line.to_string()));
                continue;
            }
            let fail = |message: &str| PasswdError::Line {
                line: i + 1,
                message: message.to_string(),
            };
            let (name, hash) = line
                .split_once(':')
                .ok_or_else(|| fail("expected 'username:hash'"))?;
            check_username(name).map_err(|err| fail(&err.to_string()))?;
            PasswordHash::new(hash).map_err(|_| {
                fail("the hash is not a PHC string (create it with `backhaul passwd`)")
            })?;
            if lines
                .iter()
                .any(|l| matches!(l, Line::User { name: n, .. } if n == name))
            {
                return Err(fail(&format!("user '{name}' appears twice")));
            }
            lines.push(Line::User {
                name: name.to_string(),
                hash: hash.to_string(),
            });
        }
        Ok(Self { lines })
    }

    /// Reads and parses `path`.
    pub fn read(path: &Path) -> Result<Self, PasswdError> {
        let text = std::fs::read_to_string(path).map_err(|err| PasswdError::Read {
            path: path.display().to_string(),
            reason: err.to_string(),
        })?;
        Self::parse(&text).map_err(|err| match err {
            PasswdError::Line { line, message } => {
                PasswdError::Invalid(format!("{}: line {line}: {message}", path.display()))
            }
            other => other,
        })
    }

    /// The file's text.
    pub fn to_text(&self) -> String {
        let mut text = String::new();
        for line in &self.lines {
            match line {
                Line::Other(other) => text.push_str(other),
                Line::User { name, hash } => {
                    text.push_str(name);
                    text.push(':');
                    text.push_str(hash);
                }
            }
            text.push('\n');
        }
        text
    }

    pub fn usernames(&self) -> impl Iterator<Item = &str> {
        self.lines.iter().filter_map(|l| match l {
            Line::User { name, .. } => Some(name.as_str()),
            Line::Other(_) => None,
        })
    }

    /// Adds `name` or replaces its password.
    pub fn set(&mut self, name: &str, password: &str) -> Result<(), PasswdError> {
        check_username(name)?;
        let hash = hash_password(password)?;
        for line in &mut self.lines {
            if let Line::User { name: n, hash: h } = line {
                if n == name {
                    *h = hash;
                    return Ok(());
                }
            }
        }
        self.lines.push(Line::User {
            name: name.to_string(),
            hash,
        });
        Ok(())
    }

    /// Removes `name`; `false` if it was not there.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.lines.len();
        self.lines
            .retain(|l| !matches!(l, Line::User { name: n, .. } if n == name));
        self.lines.len() != before
    }

    /// Checks a password (slow by design: call it off the async workers).
    pub fn verify(&self, name: &str, password: &str) -> Verified {
        let hash = self.lines.iter().find_map(|l| match l {
            Line::User { name: n, hash } if n == name => Some(hash.as_str()),
            _ => None,
        });
        let matches = PasswordHash::new(hash.unwrap_or(DECOY)).is_ok_and(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        });
        match (hash, matches) {
            (None, _) => Verified::UnknownUser,
            (Some(_), true) => Verified::Yes,
            (Some(_), false) => Verified::WrongPassword,
        }
    }

    /// Writes the file atomically (a temporary file in the same folder,
    /// fsynced, renamed over `path`), readable by its owner only.
    pub fn write(&self, path: &Path) -> Result<(), PasswdError> {
        let fail = |err: std::io::Error| PasswdError::Write {
            path: path.display().to_string(),
            reason: err.to_string(),
        };
        let folder = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let temp = folder.join(format!(
            ".{}.tmp-{}",
            name.unwrap_or_else(|| "passwd".into()),
            std::process::id()
        ));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let result = (|| {
            let mut file = options.open(&temp)?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            }
            file.write_all(self.to_text().as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&temp, path)?;
            std::fs::File::open(&folder)?.sync_all()
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        result.map_err(fail)
    }
}

/// A password file as the broker uses it: re-read when it changes on disk,
/// so `backhaul passwd` takes effect without a restart.
pub struct PasswordFile {
    path: PathBuf,
    loaded: Mutex<(Option<(SystemTime, u64)>, PasswordEntries)>,
}

impl PasswordFile {
    /// Reads the file once, so a broken file stops the start.
    pub fn open(path: &Path) -> Result<Self, PasswdError> {
        let stamp = stamp(path);
        let entries = PasswordEntries::read(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            loaded: Mutex::new((stamp, entries)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Checks a password against the current file (blocking; slow).
    /// A file that became unreadable or invalid keeps its last good
    /// contents, with a warning.
    pub fn verify(&self, name: &str, password: &str) -> Verified {
        let entries = {
            let mut loaded = match self.loaded.lock() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            let now = stamp(&self.path);
            if now != loaded.0 {
                match PasswordEntries::read(&self.path) {
                    Ok(entries) => *loaded = (now, entries),
                    Err(err) => {
                        tracing::warn!(%err, "password file not reloaded; the previous contents stay in use");
                        loaded.0 = now;
                    }
                }
            }
            loaded.1.clone()
        };
        entries.verify(name, password)
    }
}

/// Only the path: hashes stay out of logs.
impl std::fmt::Debug for PasswordFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordFile")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_verify_remove_and_round_trip() {
        let mut entries = PasswordEntries::parse("# devices\n\n").unwrap();
        entries.set("press-01", "s3cret").unwrap();
        entries.set("press-02", "other").unwrap();
        assert_eq!(entries.verify("press-01", "s3cret"), Verified::Yes);
        assert_eq!(entries.verify("press-01", "wrong"), Verified::WrongPassword);
        assert_eq!(entries.verify("nobody", "s3cret"), Verified::UnknownUser);
        let text = entries.to_text();
        assert!(
            text.starts_with("# devices\n\npress-01:$argon2id$"),
            "{text}"
        );
        assert!(!text.contains("s3cret"));
        let reread = PasswordEntries::parse(&text).unwrap();
        assert_eq!(reread, entries);
        let mut entries = reread;
        assert!(entries.remove("press-01"));
        assert!(!entries.remove("press-01"));
        assert_eq!(entries.usernames().collect::<Vec<_>>(), ["press-02"]);
    }

    #[test]
    fn bad_lines_are_named() {
        let good = format!("a:{}\nb\n", hash_password("x").unwrap());
        assert_eq!(
            PasswordEntries::parse(&good).unwrap_err().to_string(),
            "line 2: expected 'username:hash'"
        );
        assert_eq!(
            PasswordEntries::parse("a:plaintext\n")
                .unwrap_err()
                .to_string(),
            "line 1: the hash is not a PHC string (create it with `backhaul passwd`)"
        );
        assert!(check_username("a:b").is_err());
    }

    #[cfg(unix)]
    #[test]
    fn written_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        let mut entries = PasswordEntries::default();
        entries.set("u", "p").unwrap();
        entries.write(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let file = PasswordFile::open(&path).unwrap();
        assert_eq!(file.verify("u", "p"), Verified::Yes);
        entries.set("v", "q").unwrap();
        entries.write(&path).unwrap();
        assert_eq!(file.verify("v", "q"), Verified::Yes, "reloaded on change");
    }
}
