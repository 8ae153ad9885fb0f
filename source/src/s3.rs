//! An S3 bucket (AWS, Ceph RGW, SeaweedFS, MinIO, or Aliyun OSS on its S3 endpoint) as a
//! source. S3 has no directories: they are inferred from the common prefixes of a delimited
//! listing and from zero-byte `dir/` marker objects that tools like the AWS console create.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    SharedCredentialsProvider,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output;
use aws_sdk_s3::primitives::DateTime;

use crate::BlockBuf;
use crate::{Entry, Kind, Meta, Page, Source, check_relative, read_each};
use crate::{Error, Result};
use fluid_volume::mountpoint::{MountPoint, Store};
use fluid_volume::options::s3::{
    ACCESS_KEY, ENDPOINT, PATH_STYLE, REGION, SECRET_KEY, SESSION_TOKEN,
};

/// Keys a listing page asks for: S3's own maximum, so a huge directory costs few round trips.
const PAGE_SIZE: i32 = 1000;
/// A refused connection is reported in a few seconds, not after the OS's TCP timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// One HTTP attempt, headers included; the body of a GET is bounded by the caller's retry
/// policy and the SDK's stalled-stream protection.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
/// The SDK's own tries: few, because `retry::Retrying` wraps every call with its own bound.
const SDK_ATTEMPTS: u32 = 2;

pub struct S3Source {
    client: Client,
    bucket: String,
    /// Key prefix of the mount's root, without slashes at either end; "" for the bucket root.
    prefix: String,
    /// The mount point URL, for messages.
    name: String,
    /// S3 keeps no times for inferred directories; a fixed time keeps their attributes stable.
    dir_mtime: SystemTime,
}

impl S3Source {
    /// GET of bytes `offset..end` of the version `meta` names.
    async fn get_range(
        &self,
        path: &str,
        meta: &Meta,
        offset: u64,
        end: u64,
    ) -> Result<aws_sdk_s3::operation::get_object::GetObjectOutput> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.key(path))
            .range(format!("bytes={offset}-{}", end - 1))
            .set_if_match(meta.etag.clone())
            .send()
            .await
            .map_err(|e| self.error(path, e))?;
        // Some stores ignore If-Match; the ETag of the answer tells as well.
        if let (Some(want), Some(got)) = (meta.etag.as_deref(), out.e_tag())
            && !same_etag(want, got)
        {
            return Err(Error::Changed(self.shown(path)));
        }
        Ok(out)
    }

    pub async fn new(mp: &MountPoint) -> Result<Self> {
        let Store::S3 {
            bucket,
            prefix,
            oss,
        } = &mp.store
        else {
            return Err(Error::invalid(
                "mountPoint",
                format!("{}: not an s3:// or oss:// URL", mp.url),
            ));
        };
        // MountPoint::parse made sure an oss:// mount has one.
        let endpoint = mp.option(&ENDPOINT).map(with_scheme);
        // Self-hosted servers (RGW, SeaweedFS, MinIO) rarely have wildcard DNS for buckets;
        // Aliyun OSS refuses path-style requests; AWS itself prefers virtual-hosted.
        let path_style = mp
            .bool_option(&PATH_STYLE)?
            .unwrap_or(!oss && endpoint.is_some());
        let region = Region::new(mp.option(&REGION).unwrap_or("us-east-1").to_string());
        let credentials = credentials(mp, &region).await?;

        let timeouts = TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(ATTEMPT_TIMEOUT)
            .operation_attempt_timeout(ATTEMPT_TIMEOUT)
            .build();
        let mut conf = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(region)
            .credentials_provider(credentials)
            .force_path_style(path_style)
            .retry_config(RetryConfig::standard().with_max_attempts(SDK_ATTEMPTS))
            .timeout_config(timeouts)
            // Checksums only where the API requires them: third-party stores (older RGW, OSS)
            // do not all understand the newer flexible-checksum headers, and ranged GETs
            // carry no whole-object checksum to validate anyway.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(endpoint) = endpoint {
            conf = conf.endpoint_url(endpoint);
        }
        Ok(S3Source {
            client: Client::from_conf(conf.build()),
            bucket: bucket.clone(),
            prefix: prefix.clone(),
            name: mp.url.clone(),
            dir_mtime: SystemTime::now(),
        })
    }

    /// The object key of a relative path.
    fn key(&self, path: &str) -> String {
        match (self.prefix.is_empty(), path.is_empty()) {
            (true, _) => path.to_string(),
            (false, true) => self.prefix.clone(),
            (false, false) => format!("{}/{path}", self.prefix),
        }
    }

    /// The key prefix of everything under directory `dir` ("" for the bucket root).
    fn dir_prefix(&self, dir: &str) -> String {
        let key = self.key(dir);
        if key.is_empty() { key } else { key + "/" }
    }

    /// A path as users see it in messages: the mount URL and the relative path.
    fn shown(&self, path: &str) -> String {
        if path.is_empty() {
            self.name.clone()
        } else {
            format!("{}/{path}", self.name.trim_end_matches('/'))
        }
    }

    /// `message` about `path`; the mount URL leads every message already.
    fn about(path: &str, message: impl std::fmt::Display) -> String {
        if path.is_empty() {
            message.to_string()
        } else {
            format!("{path:?}: {message}")
        }
    }

    fn unavailable(&self, path: &str, message: impl std::fmt::Display) -> Error {
        Error::unavailable(self.name.clone(), Self::about(path, message))
    }

    /// Maps an SDK failure on `path` to our error kinds. Messages come from the server's
    /// error code and text or the connection error, never from the credentials.
    fn error<E>(
        &self,
        path: &str,
        err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        match &err {
            SdkError::ServiceError(service) => {
                let status = service.raw().status().as_u16();
                let code = service.err().code().unwrap_or("");
                let text = service.err().message().unwrap_or("");
                let message = [format!("HTTP {status}"), code.to_string(), text.to_string()]
                    .into_iter()
                    .filter(|part| !part.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ");
                self.classify(path, status, code, &message)
            }
            SdkError::ConstructionFailure(_) => Error::invalid(
                "s3 request",
                format!("{}: {}", self.shown(path), causes(&err)),
            ),
            SdkError::DispatchFailure(d) if d.is_user() => Error::invalid(
                "s3 request",
                format!("{}: {}", self.shown(path), causes(&err)),
            ),
            // Timeouts, refused or dropped connections, unparseable (proxy) answers.
            _ => self.unavailable(path, causes(&err)),
        }
    }

    fn classify(&self, path: &str, status: u16, code: &str, message: &str) -> Error {
        match (status, code) {
            (_, "NoSuchBucket") => {
                Error::NotFound(format!("{}: bucket {:?}", self.name, self.bucket))
            }
            (404, _) | (_, "NoSuchKey" | "NotFound") => Error::NotFound(self.shown(path)),
            // 412 from If-Match; 416 when the object shrank below a range that was valid.
            (412 | 416, _) | (_, "PreconditionFailed" | "InvalidRange") => {
                Error::Changed(self.shown(path))
            }
            (403 | 401, _)
            | (_, "AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch") => {
                Error::Denied {
                    source_name: self.name.clone(),
                    message: Self::about(path, message),
                }
            }
            (408 | 429 | 500..=599, _) | (_, "SlowDown" | "RequestTimeout" | "InternalError") => {
                self.unavailable(path, message)
            }
            _ => Error::io(self.shown(path), std::io::Error::other(message.to_string())),
        }
    }

    /// One ListObjectsV2 page of the keys under directory `dir`.
    async fn list_page(
        &self,
        dir: &str,
        delimited: bool,
        max_keys: i32,
        token: Option<String>,
    ) -> Result<ListObjectsV2Output> {
        let mut req = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(self.dir_prefix(dir))
            .max_keys(max_keys);
        if delimited {
            req = req.delimiter("/");
        }
        req.set_continuation_token(token)
            .send()
            .await
            .map_err(|e| self.error(dir, e))
    }

    fn file_meta(&self, size: Option<i64>, mtime: Option<&DateTime>, etag: Option<&str>) -> Meta {
        Meta {
            kind: Kind::File,
            size: size.unwrap_or(0).max(0) as u64,
            mtime: mtime
                .and_then(|t| SystemTime::try_from(*t).ok())
                .unwrap_or(SystemTime::UNIX_EPOCH),
            etag: etag.filter(|t| !t.is_empty()).map(str::to_string),
        }
    }

    /// The entries of one delimited listing page of `prefix`, and whether the directory
    /// showed any sign of existing (a child or its own marker object).
    fn entries_of(&self, prefix: &str, out: &ListObjectsV2Output) -> (Vec<Entry>, bool) {
        let dirs: Vec<&str> = out
            .common_prefixes()
            .iter()
            .filter_map(|p| p.prefix()?.strip_prefix(prefix)?.strip_suffix('/'))
            .filter(|n| valid_name(n))
            .collect();
        let mut files = Vec::new();
        let mut exists = !out.common_prefixes().is_empty();
        for obj in out.contents() {
            let Some(name) = obj.key().and_then(|k| k.strip_prefix(prefix)) else {
                continue;
            };
            exists = true;
            // "" is the directory's own marker object, not a child.
            if valid_name(name) {
                files.push(Entry {
                    name: name.to_string(),
                    meta: self.file_meta(obj.size(), obj.last_modified(), obj.e_tag()),
                });
            }
        }
        // A file `a` and keys under `a/` can coexist; as in `stat`, the file wins. Only a
        // clash within one page is seen (the two usually sort next to each other).
        let file_names: HashSet<&str> = files.iter().map(|e| e.name.as_str()).collect();
        let mut entries: Vec<Entry> = dirs
            .into_iter()
            .filter(|d| !file_names.contains(d))
            .map(|d| Entry {
                name: d.to_string(),
                meta: Meta::dir(self.dir_mtime),
            })
            .collect();
        entries.extend(files);
        (entries, exists)
    }
}

/// An error and its causes on one line. The SDK's own `DisplayErrorContext` appends a
/// debug dump of the raw response, too much for a message.
fn causes(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// A name that can be a child in our tree: not empty (marker objects, `a//b` keys), no
/// slash, not `.` or `..`.
fn valid_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/')
}

/// Endpoints are often given as a bare host (`oss-cn-hangzhou.aliyuncs.com`); the SDK needs
/// a URL.
fn with_scheme(endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("https://{endpoint}")
    }
}

/// Static keys from the mount's options, or else the AWS default chain (environment,
/// ~/.aws/credentials, web identity, instance metadata).
async fn credentials(mp: &MountPoint, region: &Region) -> Result<SharedCredentialsProvider> {
    match (mp.option(&ACCESS_KEY), mp.option(&SECRET_KEY)) {
        (Some(access), Some(secret)) => {
            let token = mp.option(&SESSION_TOKEN).map(str::to_string);
            Ok(SharedCredentialsProvider::new(Credentials::new(
                access,
                secret,
                token,
                None,
                "fluid-mount-options",
            )))
        }
        (None, None) => {
            let chain =
                aws_config::default_provider::credentials::DefaultCredentialsChain::builder()
                    .region(region.clone())
                    .build()
                    .await;
            Ok(SharedCredentialsProvider::new(chain))
        }
        (Some(_), None) => Err(Error::invalid(
            format!("option {}", SECRET_KEY.name()),
            format!("{}: an access key is given without a secret key", mp.url),
        )),
        (None, Some(_)) => Err(Error::invalid(
            format!("option {}", ACCESS_KEY.name()),
            format!("{}: a secret key is given without an access key", mp.url),
        )),
    }
}

fn same_etag(a: &str, b: &str) -> bool {
    a.trim_matches('"') == b.trim_matches('"')
}

#[async_trait]
impl Source for S3Source {
    fn name(&self) -> &str {
        &self.name
    }

    /// One listing of the mount's prefix: proves the endpoint answers, the bucket exists and
    /// the keys may list it, which is what every later call needs.
    async fn check(&self) -> Result<()> {
        self.list_page("", true, 1, None).await.map(|_| ())
    }

    async fn stat(&self, path: &str) -> Result<Option<Meta>> {
        check_relative(path)?;
        if path.is_empty() {
            return Ok(Some(Meta::dir(self.dir_mtime)));
        }
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.key(path))
            .send()
            .await
        {
            Ok(head) => {
                return Ok(Some(self.file_meta(
                    head.content_length(),
                    head.last_modified(),
                    head.e_tag(),
                )));
            }
            Err(e) => match self.error(path, e) {
                Error::NotFound(_) => {}
                other => return Err(other),
            },
        }
        // No object: a directory if any key (its marker included) lies under `path/`.
        let out = self.list_page(path, false, 1, None).await?;
        let is_dir = !out.contents().is_empty() || !out.common_prefixes().is_empty();
        Ok(is_dir.then(|| Meta::dir(self.dir_mtime)))
    }

    async fn list(&self, dir: &str, token: Option<String>) -> Result<Page> {
        check_relative(dir)?;
        let first_page = token.is_none();
        let prefix = self.dir_prefix(dir);
        let out = self.list_page(dir, true, PAGE_SIZE, token).await?;
        let (entries, exists) = self.entries_of(&prefix, &out);
        let next = match (
            out.is_truncated().unwrap_or(false),
            out.next_continuation_token(),
        ) {
            (false, _) => None,
            (true, Some(t)) if !t.is_empty() => Some(t.to_string()),
            // Ending here would silently hide the rest of the directory.
            (true, _) => {
                return Err(self.unavailable(dir, "listing truncated without a continuation token"));
            }
        };
        // S3 answers an empty listing for any prefix; a directory that neither has children
        // nor a marker does not exist (the bucket root always does).
        if first_page && next.is_none() && !exists && !dir.is_empty() {
            return Err(Error::NotFound(self.shown(dir)));
        }
        Ok(Page { entries, next })
    }

    async fn read_run(
        &self,
        path: &str,
        meta: &Meta,
        offset: u64,
        bufs: &mut VecDeque<BlockBuf>,
        done: &mut (dyn FnMut(BlockBuf) + Send),
    ) -> Result<()> {
        check_relative(path)?;
        let total: u64 = bufs.iter().map(|b| b.capacity() as u64).sum();
        let end = offset.saturating_add(total).min(meta.size); // exclusive
        if bufs.len() < 2 || offset >= end {
            return read_each(self, path, meta, offset, bufs, done).await;
        }
        let out = self.get_range(path, meta, offset, end).await?;
        if out.content_length() != Some((end - offset) as i64) {
            // The store ignored the range: one block at a time copes with that.
            return read_each(self, path, meta, offset, bufs, done).await;
        }
        let mut body = out.body;
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| self.unavailable(path, causes(&e)))?
        {
            let mut rest = &chunk[..];
            while !rest.is_empty() {
                let Some(front) = bufs.front_mut() else {
                    return Err(Error::Changed(self.shown(path)));
                };
                rest = front.push(rest);
                if front.filled() == front.capacity()
                    && let Some(full) = bufs.pop_front()
                {
                    done(full);
                }
            }
        }
        while let Some(empty) = bufs.pop_front_if(|b| b.capacity() == 0) {
            done(empty);
        }
        if bufs.is_empty() {
            Ok(())
        } else {
            Err(Error::Changed(self.shown(path)))
        }
    }

    async fn read_into(
        &self,
        path: &str,
        meta: &Meta,
        offset: u64,
        buf: &mut BlockBuf,
    ) -> Result<()> {
        check_relative(path)?;
        buf.clear();
        let len = buf.capacity() as u64;
        if len == 0 || offset >= meta.size {
            return Ok(());
        }
        let end = offset.saturating_add(len).min(meta.size); // exclusive
        let out = self.get_range(path, meta, offset, end).await?;
        // The body goes straight into the caller's buffer; bytes beyond it are kept aside in
        // case the store ignored the range.
        let want = (end - offset) as usize;
        let mut beyond: Vec<u8> = Vec::new();
        let mut body = out.body;
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| self.unavailable(path, causes(&e)))?
        {
            beyond.extend_from_slice(buf.push(&chunk));
        }
        match buf.filled() + beyond.len() {
            n if n == want && beyond.is_empty() => Ok(()),
            // A store that ignored the range sent the whole (unchanged) object.
            n if n as u64 == meta.size => {
                let mut whole = buf.as_ref().to_vec();
                whole.extend_from_slice(&beyond);
                buf.clear();
                buf.push(&whole[offset as usize..end as usize]);
                Ok(())
            }
            _ => Err(Error::Changed(self.shown(path))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    async fn source(url: &str, opts: &[(&str, &str)]) -> Result<S3Source> {
        let opts: BTreeMap<String, String> = opts
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        S3Source::new(&MountPoint::parse(url, opts, "mountPoint")?).await
    }

    const KEYS: &[(&str, &str)] = &[("access-key", "AK"), ("secret-key", "SK")];

    #[tokio::test]
    async fn keys_and_prefixes() {
        let s = source("s3://b/data/v1/", KEYS).await.unwrap();
        assert_eq!(s.key(""), "data/v1");
        assert_eq!(s.key("a/b c"), "data/v1/a/b c");
        assert_eq!(s.dir_prefix(""), "data/v1/");
        assert_eq!(s.dir_prefix("a"), "data/v1/a/");
        assert_eq!(s.shown("a"), "s3://b/data/v1/a");
        let root = source("s3://b", KEYS).await.unwrap();
        assert_eq!(root.key("x"), "x");
        assert_eq!(root.dir_prefix(""), "");
        assert_eq!(root.dir_prefix("x"), "x/");
    }

    #[tokio::test]
    async fn refuses_half_credentials_and_oss_without_endpoint() {
        let err = source("s3://b", &[("access-key", "AK")])
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains("secret"), "{err}");
        let err = source("s3://b", &[("fs.oss.accessKeySecret", "TOPSECRET")])
            .await
            .err()
            .unwrap();
        assert!(!err.to_string().contains("TOPSECRET"), "{err}");
        let err = source("oss://b", KEYS).await.err().unwrap();
        assert!(err.to_string().contains("endpoint"), "{err}");
        let err = source("s3://b", &[("path-style", "maybe")])
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains("path-style"), "{err}");
    }

    #[test]
    fn names_and_endpoints() {
        assert!(valid_name("a b+%ü"));
        for bad in ["", ".", "..", "a/b"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        assert_eq!(
            with_scheme("oss-cn-hangzhou.aliyuncs.com"),
            "https://oss-cn-hangzhou.aliyuncs.com"
        );
        assert_eq!(
            with_scheme("http://127.0.0.1:8333"),
            "http://127.0.0.1:8333"
        );
        assert!(same_etag("\"abc\"", "abc"));
        assert!(!same_etag("\"abc\"", "\"abd\""));
    }

    #[tokio::test]
    async fn classifies_service_errors() {
        let s = source("s3://b/p", KEYS).await.unwrap();
        let c = |status, code| s.classify("k", status, code, "msg");
        assert!(matches!(
            c(403, "SignatureDoesNotMatch"),
            Error::Denied { .. }
        ));
        assert!(matches!(c(400, "InvalidAccessKeyId"), Error::Denied { .. }));
        assert!(matches!(c(404, "NoSuchKey"), Error::NotFound(_)));
        let Error::NotFound(bucket) = c(404, "NoSuchBucket") else {
            panic!()
        };
        assert!(bucket.contains("\"b\""), "{bucket}");
        assert!(matches!(c(412, "PreconditionFailed"), Error::Changed(_)));
        assert!(c(503, "SlowDown").is_retryable());
        assert!(c(500, "").is_retryable());
        assert!(!c(400, "InvalidArgument").is_retryable());
    }
}
