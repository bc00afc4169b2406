//! `backhaul passwd`: manages a broker password file like
//! `mosquitto_passwd` does. The password is prompted twice on the terminal
//! (without echo) or read from standard input; it is never a command-line
//! argument, where other users could see it in the process list.

use std::io::BufRead;
use std::path::Path;

use anyhow::{bail, Context, Result};
use backhaul_broker::passwd::{check_username, PasswordEntries};

/// What `backhaul passwd` was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswdAction {
    /// Add the user or change its password; `create` starts a new file.
    Set {
        create: bool,
        password_stdin: bool,
    },
    Delete,
}

/// Runs the command; the message to print on success.
pub fn run(file: &Path, username: &str, action: PasswdAction) -> Result<String> {
    check_username(username)?;
    let mut entries = match action {
        PasswdAction::Set { create: true, .. } => PasswordEntries::default(),
        _ => PasswordEntries::read(file)?,
    };
    let message = match action {
        PasswdAction::Delete => {
            if !entries.remove(username) {
                bail!("{}: no user '{username}'", file.display());
            }
            format!("deleted user '{username}' from {}", file.display())
        }
        PasswdAction::Set { password_stdin, .. } => {
            let password = if password_stdin {
                read_stdin()?
            } else {
                prompt_twice()?
            };
            if password.is_empty() {
                bail!("the password must not be empty");
            }
            let existed = entries.usernames().any(|u| u == username);
            entries.set(username, &password)?;
            let verb = if existed { "updated" } else { "added" };
            format!("{verb} user '{username}' in {}", file.display())
        }
    };
    entries.write(file)?;
    Ok(message)
}

fn read_stdin() -> Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

fn prompt_twice() -> Result<String> {
    let first = rpassword::prompt_password("Password: ")
        .context("cannot read the password from the terminal (use --password-stdin)")?;
    let second = rpassword::prompt_password("Reenter password: ")
        .context("cannot read the password from the terminal")?;
    if first != second {
        bail!("the passwords do not match");
    }
    Ok(first)
}
