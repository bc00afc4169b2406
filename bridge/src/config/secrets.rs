//! Kubernetes secret references as files: `secretRef: NAME` with key `KEY`
//! reads `secrets/NAME/KEY` under the configuration directory, or else the
//! environment variable `BACKHAUL_SECRET_<NAME>_<KEY>` (upper case, other
//! characters as `_`). Values are never logged or echoed in errors.

use std::path::Path;

/// The environment variable that can hold secret `name`'s `key`.
pub fn env_name(name: &str, key: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect()
    };
    format!("BACKHAUL_SECRET_{}_{}", clean(name), clean(key))
}

/// Reads a secret value; the error says where it was looked for.
pub fn resolve(config_dir: Option<&Path>, name: &str, key: &str) -> Result<String, String> {
    if let Some(dir) = config_dir {
        let path = dir.join("secrets").join(name).join(key);
        if let Ok(value) = std::fs::read_to_string(&path) {
            return Ok(value.trim_end_matches(['\r', '\n']).to_string());
        }
    }
    let variable = env_name(name, key);
    if let Ok(value) = std::env::var(&variable) {
        return Ok(value);
    }
    let file = match config_dir {
        Some(dir) => format!("{} or ", dir.join("secrets").join(name).join(key).display()),
        None => String::new(),
    };
    Err(format!(
        "secret '{name}' has no key '{key}': expected {file}the environment variable {variable}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_first_then_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("secrets/eh-conn")).unwrap();
        std::fs::write(
            dir.path().join("secrets/eh-conn/connectionString"),
            "Endpoint=x\n",
        )
        .unwrap();
        assert_eq!(
            resolve(Some(dir.path()), "eh-conn", "connectionString").unwrap(),
            "Endpoint=x"
        );
        assert_eq!(
            env_name("eh-conn", "connectionString"),
            "BACKHAUL_SECRET_EH_CONN_CONNECTIONSTRING"
        );
        let err = resolve(Some(dir.path()), "other", "connectionString").unwrap_err();
        assert!(
            err.ends_with("the environment variable BACKHAUL_SECRET_OTHER_CONNECTIONSTRING"),
            "{err}"
        );
    }
}
