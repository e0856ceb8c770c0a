//! Where okta-port keeps what must outlive one run (the System Log catch-up's cursor),
//! named by `STATE_URL`. Locally a directory (`file:///path`); a store in S3 is not built
//! yet and is refused by name rather than ignored.

use std::path::PathBuf;

use async_trait::async_trait;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("STATE_URL {0:?}: {1}")]
    Url(String, &'static str),
    #[error("state {key}: {message}")]
    Io { key: String, message: String },
}

/// A small key → bytes store; a value is replaced whole (a reader never sees half of it).
#[async_trait]
pub trait StateStore: Send + Sync {
    async fn load(&self, key: &str) -> Result<Option<Vec<u8>>, StateError>;
    async fn save(&self, key: &str, value: &[u8]) -> Result<(), StateError>;
}

/// The store `STATE_URL` names.
pub fn from_url(url: &str) -> Result<Box<dyn StateStore>, StateError> {
    if let Some(path) = url.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(StateError::Url(
                url.into(),
                "a file:// URL needs an absolute path (file:///var/okta-port)",
            ));
        }
        return Ok(Box::new(FileStore {
            dir: PathBuf::from(path),
        }));
    }
    if url.starts_with("s3://") {
        return Err(StateError::Url(
            url.into(),
            "an S3 state store is not supported yet; use file:///path",
        ));
    }
    Err(StateError::Url(url.into(), "must be file:///path"))
}

/// One file per key in a directory, written to a temporary file and renamed into place.
pub struct FileStore {
    dir: PathBuf,
}

impl FileStore {
    fn path(&self, key: &str) -> PathBuf {
        let safe: String = key
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.dir.join(format!("{safe}.json"))
    }
}

#[async_trait]
impl StateStore for FileStore {
    async fn load(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        match tokio::fs::read(self.path(key)).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StateError::Io {
                key: key.into(),
                message: e.to_string(),
            }),
        }
    }

    async fn save(&self, key: &str, value: &[u8]) -> Result<(), StateError> {
        let io = |e: std::io::Error| StateError::Io {
            key: key.into(),
            message: e.to_string(),
        };
        tokio::fs::create_dir_all(&self.dir).await.map_err(io)?;
        let path = self.path(key);
        let partial = path.with_extension("json.partial");
        tokio::fs::write(&partial, value).await.map_err(io)?;
        tokio::fs::rename(&partial, &path).await.map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_file_store_round_trips_and_refuses_what_it_cannot_be() {
        let dir = std::env::temp_dir().join(format!("okta-port-state-{}", std::process::id()));
        let store = from_url(&format!("file://{}", dir.display())).unwrap();
        assert_eq!(store.load("cursor/okta.example").await.unwrap(), None);
        store.save("cursor/okta.example", b"{\"a\":1}").await.unwrap();
        assert_eq!(
            store.load("cursor/okta.example").await.unwrap().as_deref(),
            Some(&b"{\"a\":1}"[..])
        );
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            from_url("s3://bucket/prefix")
                .err()
                .unwrap()
                .to_string()
                .contains("not supported yet")
        );
        assert!(from_url("file://relative").is_err() && from_url("/tmp/x").is_err());
    }
}
