//! Where okta-port keeps what must outlive one run (the System Log catch-up's cursor),
//! named by `STATE_URL`: a directory locally (`file:///path`), an S3 prefix in AWS
//! (`s3://bucket/prefix`, the stack's state bucket).

use std::path::{Path, PathBuf};

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
    /// Removes the value; removing what is not there is no error.
    async fn remove(&self, key: &str) -> Result<(), StateError>;
    /// Saves the file at `path` as the value, streamed (a large value never sits in memory).
    async fn save_file(&self, key: &str, path: &Path) -> Result<(), StateError>;
    /// Writes the value into the file at `path`, streamed; `false` when there is none.
    async fn load_file(&self, key: &str, path: &Path) -> Result<bool, StateError>;
}

fn io_error(key: &str) -> impl Fn(std::io::Error) -> StateError + '_ {
    move |e| StateError::Io {
        key: key.into(),
        message: e.to_string(),
    }
}

/// The store `STATE_URL` names.
pub async fn from_url(url: &str) -> Result<Box<dyn StateStore>, StateError> {
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
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(StateError::Url(
                url.into(),
                "an s3:// URL needs a bucket (s3://bucket/prefix)",
            ));
        }
        return Ok(Box::new(S3Store::new(bucket, prefix).await));
    }
    Err(StateError::Url(
        url.into(),
        "must be file:///path or s3://bucket/prefix",
    ))
}

/// Objects under a prefix of an S3 bucket, one per key.
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
}

impl S3Store {
    async fn new(bucket: &str, prefix: &str) -> Self {
        let config = crate::aws::sdk_config(crate::aws::GENERAL).await;
        // A custom endpoint (moto, a local S3) serves buckets by path, not by host name.
        let path_style = std::env::var_os("AWS_ENDPOINT_URL").is_some();
        let s3 = aws_sdk_s3::config::Builder::from(&config)
            .force_path_style(path_style)
            .build();
        Self {
            client: aws_sdk_s3::Client::from_conf(s3),
            bucket: bucket.to_owned(),
            prefix: prefix.trim_matches('/').to_owned(),
        }
    }

    fn object(&self, key: &str) -> String {
        match self.prefix.as_str() {
            "" => format!("{key}.json"),
            prefix => format!("{prefix}/{key}.json"),
        }
    }

    fn error(&self, key: &str, e: impl std::error::Error) -> StateError {
        StateError::Io {
            key: key.into(),
            message: format!(
                "s3://{}/{}: {}",
                self.bucket,
                self.object(key),
                aws_sdk_s3::error::DisplayErrorContext(e)
            ),
        }
    }
}

#[async_trait]
impl StateStore for S3Store {
    async fn load(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        let got = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.object(key))
            .send()
            .await;
        match got {
            Ok(object) => {
                let bytes = object.body.collect().await.map_err(|e| self.error(key, e))?;
                Ok(Some(bytes.into_bytes().to_vec()))
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
            Err(e) => Err(self.error(key, e)),
        }
    }

    async fn save(&self, key: &str, value: &[u8]) -> Result<(), StateError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(self.object(key))
            .content_type("application/json")
            .body(value.to_vec().into())
            .send()
            .await
            .map_err(|e| self.error(key, e))?;
        Ok(())
    }

    async fn save_file(&self, key: &str, path: &Path) -> Result<(), StateError> {
        let body = aws_sdk_s3::primitives::ByteStream::from_path(path)
            .await
            .map_err(|e| self.error(key, e))?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(self.object(key))
            .content_type("application/octet-stream")
            .body(body)
            .send()
            .await
            .map_err(|e| self.error(key, e))?;
        Ok(())
    }

    async fn load_file(&self, key: &str, path: &Path) -> Result<bool, StateError> {
        let got = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.object(key))
            .send()
            .await;
        let object = match got {
            Ok(object) => object,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => return Ok(false),
            Err(e) => return Err(self.error(key, e)),
        };
        let mut file = tokio::fs::File::create(path).await.map_err(io_error(key))?;
        let mut body = object.body.into_async_read();
        tokio::io::copy(&mut body, &mut file)
            .await
            .map_err(io_error(key))?;
        tokio::io::AsyncWriteExt::flush(&mut file)
            .await
            .map_err(io_error(key))?;
        Ok(true)
    }

    async fn remove(&self, key: &str) -> Result<(), StateError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.object(key))
            .send()
            .await
            .map_err(|e| self.error(key, e))?;
        Ok(())
    }
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

    async fn save_file(&self, key: &str, path: &Path) -> Result<(), StateError> {
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(io_error(key))?;
        let target = self.path(key);
        let partial = target.with_extension("json.partial");
        tokio::fs::copy(path, &partial).await.map_err(io_error(key))?;
        tokio::fs::rename(&partial, &target).await.map_err(io_error(key))
    }

    async fn load_file(&self, key: &str, path: &Path) -> Result<bool, StateError> {
        match tokio::fs::copy(self.path(key), path).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_error(key)(e)),
        }
    }

    async fn remove(&self, key: &str) -> Result<(), StateError> {
        match tokio::fs::remove_file(self.path(key)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StateError::Io {
                key: key.into(),
                message: e.to_string(),
            }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_file_store_round_trips_and_bad_urls_are_refused() {
        let dir = std::env::temp_dir().join(format!("okta-port-state-{}", std::process::id()));
        let store = from_url(&format!("file://{}", dir.display())).await.unwrap();
        assert_eq!(store.load("cursor/okta.example").await.unwrap(), None);
        store.save("cursor/okta.example", b"{\"a\":1}").await.unwrap();
        assert_eq!(
            store.load("cursor/okta.example").await.unwrap().as_deref(),
            Some(&b"{\"a\":1}"[..])
        );
        std::fs::remove_dir_all(&dir).unwrap();
        for bad in ["file://relative", "/tmp/x", "s3:///prefix"] {
            assert!(from_url(bad).await.is_err(), "{bad}");
        }
    }
}
