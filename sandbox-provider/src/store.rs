//! The sandbox's "cloud": each object is one JSON file `<dir>/<id>.json` that exists exactly as
//! long as the object does. Files are replaced atomically (temporary file, fsync, rename), so a
//! reader never sees half an object, and an interrupted provider leaves whole files behind.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// An object id that is safe to use as a file name: ASCII letters, digits, `-`, `_` and `.`,
/// not starting with `.`, at most 128 characters. Ids come back to us from terraform state and
/// `terraform import`, so they are checked before they touch the file system.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectId(String);

impl ObjectId {
    pub const MAX_LEN: usize = 128;

    pub fn parse(id: &str) -> Result<Self, InvalidObjectId> {
        let well_formed = !id.is_empty()
            && id.len() <= Self::MAX_LEN
            && !id.starts_with('.')
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if well_formed {
            Ok(Self(id.to_owned()))
        } else {
            Err(InvalidObjectId(id.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidObjectId(String);

impl fmt::Display for InvalidObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not a sandbox object id (expected 1 to {} characters among letters, digits, '-', '_' and '.', not starting with '.')",
            self.0,
            ObjectId::MAX_LEN
        )
    }
}

impl std::error::Error for InvalidObjectId {}

/// Where an object is in its life: `creating` from the moment the create call is made until its
/// delay has passed, then `ready`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectStatus {
    Creating,
    Ready,
}

/// What the sandbox stores for one object: the resource's attributes plus its status.
/// Optional attributes keep `None` so that terraform reads back exactly what it wrote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxObject {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub endpoint: String,
    pub secret: String,
    #[serde(default)]
    pub properties: Option<BTreeMap<String, Option<String>>>,
    #[serde(default)]
    pub create_delay_ms: Option<i64>,
    #[serde(default)]
    pub update_delay_ms: Option<i64>,
    #[serde(default)]
    pub destroy_delay_ms: Option<i64>,
    #[serde(default)]
    pub fail_on_create: Option<bool>,
    #[serde(default)]
    pub fail_on_destroy: Option<bool>,
    pub status: ObjectStatus,
}

/// Errors of the file store; each names the file and what went wrong in one sentence.
#[derive(Debug)]
pub enum StoreError {
    Directory {
        dir: PathBuf,
        source: io::Error,
    },
    NotADirectory {
        dir: PathBuf,
    },
    Write {
        path: PathBuf,
        source: io::Error,
    },
    Read {
        path: PathBuf,
        source: io::Error,
    },
    Remove {
        path: PathBuf,
        source: io::Error,
    },
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    InvalidId(InvalidObjectId),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Directory { dir, source } => write!(
                f,
                "cannot create the sandbox directory {}: {source}",
                dir.display()
            ),
            StoreError::NotADirectory { dir } => {
                write!(f, "the sandbox path {} is not a directory", dir.display())
            }
            StoreError::Write { path, source } => {
                write!(f, "cannot write {}: {source}", path.display())
            }
            StoreError::Read { path, source } => {
                write!(f, "cannot read {}: {source}", path.display())
            }
            StoreError::Remove { path, source } => {
                write!(f, "cannot remove {}: {source}", path.display())
            }
            StoreError::Corrupt { path, source } => write!(
                f,
                "{} is not a valid sandbox object: {source}",
                path.display()
            ),
            StoreError::InvalidId(err) => err.fmt(f),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Directory { source, .. }
            | StoreError::Write { source, .. }
            | StoreError::Read { source, .. }
            | StoreError::Remove { source, .. } => Some(source),
            StoreError::Corrupt { source, .. } => Some(source),
            StoreError::InvalidId(err) => Some(err),
            StoreError::NotADirectory { .. } => None,
        }
    }
}

/// A directory of sandbox objects.
#[derive(Clone, Debug)]
pub struct Store {
    dir: PathBuf,
}

const OBJECT_SUFFIX: &str = ".json";

impl Store {
    /// Opens the directory, creating it (and its parents) when missing.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let dir = dir.into();
        let dir = std::path::absolute(&dir).unwrap_or(dir);
        fs::create_dir_all(&dir).map_err(|source| StoreError::Directory {
            dir: dir.clone(),
            source,
        })?;
        if !dir.is_dir() {
            return Err(StoreError::NotADirectory { dir });
        }
        Ok(Self { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path_of(&self, id: &ObjectId) -> PathBuf {
        self.dir.join(format!("{id}{OBJECT_SUFFIX}"))
    }

    /// Writes the object under its id, replacing any previous version atomically.
    pub fn save(&self, object: &SandboxObject) -> Result<(), StoreError> {
        let id = ObjectId::parse(&object.id).map_err(StoreError::InvalidId)?;
        let path = self.path_of(&id);
        let write_error = |source| StoreError::Write {
            path: path.clone(),
            source,
        };
        let mut json = serde_json::to_vec_pretty(object)
            .map_err(|err| write_error(io::Error::new(io::ErrorKind::InvalidData, err)))?;
        json.push(b'\n');

        // Hidden and unique per process and call, so listings skip it and writers never collide.
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let tmp = self.dir.join(format!(
            ".{id}.{}.{}.tmp",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let written = (|| {
            let mut file = fs::File::create(&tmp)?;
            file.write_all(&json)?;
            file.sync_all()?;
            fs::rename(&tmp, &path)
        })();
        if let Err(source) = written {
            let _ = fs::remove_file(&tmp);
            return Err(write_error(source));
        }
        Ok(())
    }

    /// The object with this id, or `None` when its file does not exist.
    pub fn load(&self, id: &ObjectId) -> Result<Option<SandboxObject>, StoreError> {
        let path = self.path_of(id);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StoreError::Read { path, source }),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| StoreError::Corrupt { path, source })
    }

    /// Removes the object's file. Returns whether it existed.
    pub fn remove(&self, id: &ObjectId) -> Result<bool, StoreError> {
        let path = self.path_of(id);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(StoreError::Remove { path, source }),
        }
    }

    /// Ids of every object in the directory, sorted. Files that are not objects are skipped.
    pub fn list(&self) -> Result<Vec<ObjectId>, StoreError> {
        let read_error = |source| StoreError::Read {
            path: self.dir.clone(),
            source,
        };
        let mut ids = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(read_error)? {
            let name = entry.map_err(read_error)?.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(OBJECT_SUFFIX)) else {
                continue;
            };
            if let Ok(id) = ObjectId::parse(stem) {
                ids.push(id);
            }
        }
        ids.sort();
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn object(id: &str) -> SandboxObject {
        SandboxObject {
            id: id.to_owned(),
            name: "plant".to_owned(),
            kind: "iot_hub".to_owned(),
            endpoint: "https://iot-hub-plant.sandbox.local".to_owned(),
            secret: "s3cr3t".to_owned(),
            properties: Some(BTreeMap::from([
                ("sku".to_owned(), Some("S1".to_owned())),
                ("empty".to_owned(), None),
            ])),
            create_delay_ms: Some(1500),
            update_delay_ms: None,
            destroy_delay_ms: Some(0),
            fail_on_create: None,
            fail_on_destroy: Some(false),
            status: ObjectStatus::Creating,
        }
    }

    fn store() -> (tempfile::TempDir, Store) {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path().join("nested/sandbox")).unwrap();
        (tmp, store)
    }

    #[test]
    fn ids_are_safe_file_names() {
        for good in ["iot-hub-plant-0a1b2c3d", "a", "A_b.c-9", &"x".repeat(128)] {
            assert!(ObjectId::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "../etc/passwd",
            "a/b",
            "a b",
            "é",
            "a\0b",
            &"x".repeat(129),
        ] {
            assert!(ObjectId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn invalid_id_message_names_the_id() {
        let err = ObjectId::parse("../x").unwrap_err();
        assert!(err
            .to_string()
            .starts_with("\"../x\" is not a sandbox object id"));
    }

    #[test]
    fn open_creates_missing_directories() {
        let (_tmp, store) = store();
        assert!(store.dir().is_dir());
        assert!(store.dir().is_absolute());
    }

    #[test]
    fn open_refuses_a_file() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("file");
        fs::write(&file, "").unwrap();
        let err = Store::open(&file).unwrap_err();
        assert!(err.to_string().contains("file"), "{err}");
    }

    #[test]
    fn save_then_load_round_trips_every_field() {
        let (_tmp, store) = store();
        let saved = object("iot-hub-plant-1");
        store.save(&saved).unwrap();
        let id = ObjectId::parse("iot-hub-plant-1").unwrap();
        assert_eq!(store.load(&id).unwrap(), Some(saved));
        assert!(store.path_of(&id).ends_with("iot-hub-plant-1.json"));
    }

    #[test]
    fn save_replaces_and_leaves_no_temporary_files() {
        let (_tmp, store) = store();
        let mut obj = object("db-1");
        store.save(&obj).unwrap();
        obj.status = ObjectStatus::Ready;
        obj.properties = None;
        store.save(&obj).unwrap();
        let id = ObjectId::parse("db-1").unwrap();
        assert_eq!(store.load(&id).unwrap(), Some(obj));
        let names: Vec<_> = fs::read_dir(store.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["db-1.json".to_owned()]);
    }

    #[test]
    fn saved_file_is_readable_json_with_status() {
        let (_tmp, store) = store();
        store.save(&object("fn-1")).unwrap();
        let text = fs::read_to_string(store.dir().join("fn-1.json")).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["status"], "creating");
        assert_eq!(value["properties"]["sku"], "S1");
        assert_eq!(value["update_delay_ms"], serde_json::Value::Null);
    }

    #[test]
    fn save_refuses_an_unsafe_id() {
        let (_tmp, store) = store();
        let err = store.save(&object("../escape")).unwrap_err();
        assert!(matches!(err, StoreError::InvalidId(_)));
        assert!(!store.dir().parent().unwrap().join("escape.json").exists());
    }

    #[test]
    fn load_of_a_missing_object_is_none() {
        let (_tmp, store) = store();
        assert_eq!(store.load(&ObjectId::parse("gone").unwrap()).unwrap(), None);
    }

    #[test]
    fn load_of_a_corrupt_file_says_which_file() {
        let (_tmp, store) = store();
        fs::write(store.dir().join("bad.json"), "{not json").unwrap();
        let err = store.load(&ObjectId::parse("bad").unwrap()).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }));
        assert!(err.to_string().contains("bad.json"), "{err}");
    }

    #[test]
    fn remove_reports_whether_the_object_existed() {
        let (_tmp, store) = store();
        store.save(&object("grafana-1")).unwrap();
        let id = ObjectId::parse("grafana-1").unwrap();
        assert!(store.remove(&id).unwrap());
        assert!(!store.remove(&id).unwrap());
        assert_eq!(store.load(&id).unwrap(), None);
    }

    #[test]
    fn list_returns_sorted_object_ids_only() {
        let (_tmp, store) = store();
        store.save(&object("b")).unwrap();
        store.save(&object("a")).unwrap();
        fs::write(store.dir().join(".a.1.2.tmp"), "").unwrap();
        fs::write(store.dir().join("notes.txt"), "").unwrap();
        let ids: Vec<_> = store
            .list()
            .unwrap()
            .into_iter()
            .map(|id| id.to_string())
            .collect();
        assert_eq!(ids, vec!["a", "b"]);
    }
}
