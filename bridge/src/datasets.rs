//! Reference data for enrichment (`datasets` in a BuiltInTransformation).
//!
//! Azure IoT Operations keeps datasets in its state store; an appliance has
//! none, so each dataset is a JSON Lines file `datasets/<key>.jsonl` in the
//! configuration directory (one JSON object per line). Files are read at
//! start, re-read when they change (checked every few seconds), and a
//! dataset can be replaced at run time with `PUT /api/v1/datasets/<key>`
//! (kept until the next restart or the next change of its file). A file
//! that fails to parse keeps the previous contents and logs the line at
//! fault.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::{ConfigError, ConfigErrors};
use crate::mapping::{parse_json_lines, DatasetError, Datasets, Json};

/// The folder of dataset files inside a configuration directory.
pub const DATASETS_DIR: &str = "datasets";

/// Datasets shared by every flow, with their files' change times.
pub struct DatasetStore {
    datasets: RwLock<Datasets>,
    dir: Option<PathBuf>,
    seen: Mutex<BTreeMap<String, Option<SystemTime>>>,
}

/// A dataset key as a file name and URL segment allows it.
pub fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 64
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !key.starts_with('.')
}

/// Every `<key>.jsonl` in `dir` with its modification time.
fn dataset_files(dir: &Path) -> Vec<(String, PathBuf, Option<SystemTime>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("jsonl"))
        .filter_map(|path| {
            let key = path.file_stem()?.to_str()?.to_string();
            let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
            Some((key, path, modified))
        })
        .collect();
    files.sort();
    files
}

fn read_file(path: &Path) -> Result<Vec<Json>, String> {
    let text = std::fs::read_to_string(path).map_err(|err| format!("cannot read: {err}"))?;
    parse_json_lines(&text).map_err(|err| err.to_string())
}

/// Parses every dataset file under `<config dir>/datasets`, for validation.
pub fn check_dir(config_dir: &Path) -> Result<BTreeMap<String, usize>, ConfigErrors> {
    let mut counts = BTreeMap::new();
    let mut errors = Vec::new();
    for (key, path, _) in dataset_files(&config_dir.join(DATASETS_DIR)) {
        let problem = if !valid_key(&key) {
            Err(format!(
                "'{key}' is not a valid dataset key (letters, digits, '-', '_', '.')"
            ))
        } else {
            read_file(&path)
        };
        match problem {
            Ok(records) => {
                counts.insert(key, records.len());
            }
            Err(message) => errors.push(ConfigError {
                file: path.display().to_string(),
                document: None,
                resource: None,
                field: None,
                message,
            }),
        }
    }
    if errors.is_empty() {
        Ok(counts)
    } else {
        Err(ConfigErrors(errors))
    }
}

impl DatasetStore {
    /// Loads `<config dir>/datasets/*.jsonl`; an empty store without a dir.
    pub fn open(config_dir: Option<&Path>) -> Self {
        let store = Self {
            datasets: RwLock::new(Datasets::new()),
            dir: config_dir.map(|d| d.join(DATASETS_DIR)),
            seen: Mutex::new(BTreeMap::new()),
        };
        store.reload_changed();
        store
    }

    /// The datasets, for one batch of transforms.
    pub fn read(&self) -> RwLockReadGuard<'_, Datasets> {
        self.datasets.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces dataset `key` with the JSON Lines in `text`; returns how
    /// many records it holds now.
    pub fn replace(&self, key: &str, text: &str) -> Result<usize, DatasetError> {
        let records = parse_json_lines(text)?;
        let count = records.len();
        self.datasets
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .set(key, records);
        info!(
            dataset = key,
            records = count,
            "dataset replaced through the API"
        );
        Ok(count)
    }

    /// Keys and record counts.
    pub fn summary(&self) -> Vec<(String, usize)> {
        let datasets = self.read();
        datasets
            .keys()
            .map(|k| (k.to_string(), datasets.get(k).map_or(0, <[Json]>::len)))
            .collect()
    }

    /// Re-reads dataset files that appeared or changed since the last look.
    pub fn reload_changed(&self) {
        let Some(dir) = &self.dir else {
            return;
        };
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        for (key, path, modified) in dataset_files(dir) {
            if seen.get(&key) == Some(&modified) || !valid_key(&key) {
                continue;
            }
            seen.insert(key.clone(), modified);
            match read_file(&path) {
                Ok(records) => {
                    info!(dataset = %key, records = records.len(), file = %path.display(), "dataset loaded");
                    self.datasets
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .set(key, records);
                }
                Err(err) => {
                    warn!(dataset = %key, file = %path.display(), %err, "dataset file not loaded; keeping the previous contents");
                }
            }
        }
    }

    /// Checks the files every `interval` until `shutdown`.
    pub async fn watch(&self, interval: Duration, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => self.reload_changed(),
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::create_dir_all(dir.join(DATASETS_DIR)).unwrap();
        std::fs::write(dir.join(DATASETS_DIR).join(name), text).unwrap();
    }

    #[test]
    fn files_load_reload_and_bad_ones_keep_the_old_contents() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "assets.jsonl",
            "{\"id\":\"a\"}\n{\"id\":\"b\"}\n",
        );
        let store = DatasetStore::open(Some(dir.path()));
        assert_eq!(store.summary(), vec![("assets".to_string(), 2)]);

        // A change is picked up (set an older mtime first so the new one differs).
        write(dir.path(), "assets.jsonl", "{\"id\":\"c\"}\n");
        let file = std::fs::File::options()
            .write(true)
            .open(dir.path().join("datasets/assets.jsonl"))
            .unwrap();
        file.set_modified(SystemTime::now() + Duration::from_secs(5))
            .unwrap();
        store.reload_changed();
        assert_eq!(
            store.read().get("assets").unwrap(),
            &[Json::from(serde_json::json!({"id": "c"}))]
        );

        write(dir.path(), "assets.jsonl", "{\"id\":\n");
        let file = std::fs::File::options()
            .write(true)
            .open(dir.path().join("datasets/assets.jsonl"))
            .unwrap();
        file.set_modified(SystemTime::now() + Duration::from_secs(10))
            .unwrap();
        store.reload_changed();
        assert_eq!(store.summary(), vec![("assets".to_string(), 1)], "kept");
    }

    #[test]
    fn check_dir_names_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "good.jsonl", "{\"a\":1}\n");
        write(dir.path(), "bad.jsonl", "{\"a\":1}\nnot json\n");
        let errors = check_dir(dir.path()).unwrap_err().to_string();
        let file = dir.path().join("datasets/bad.jsonl").display().to_string();
        assert!(errors.starts_with(&format!("{file}: line 2: ")), "{errors}");
    }

    #[test]
    fn the_api_replaces_a_dataset() {
        let store = DatasetStore::open(None);
        assert_eq!(
            store.replace("plants", "{\"p\":1}\n{\"p\":2}\n").unwrap(),
            2
        );
        assert_eq!(store.summary(), vec![("plants".to_string(), 2)]);
        assert_eq!(store.replace("plants", "[1]\n").unwrap_err().line, 1);
        assert!(valid_key("asset-data_1.v2"));
        assert!(!valid_key("../etc") && !valid_key("") && !valid_key("a/b"));
    }
}
