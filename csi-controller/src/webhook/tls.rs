//! The webhook's TLS server configuration from PEM files (the chart mounts them from a Secret).
//! Read once at start: a bad file stops the controller with the flag and path named, rather
//! than leaving a webhook that the API server cannot talk to. Errors never quote the key file.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::aws_lc_rs;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{Error, Result};

pub const CERT_FLAG: &str = "--webhook-cert";
pub const KEY_FLAG: &str = "--webhook-key";

/// A server configuration for `cert` (a PEM chain, leaf first) and `key` (a PEM private key,
/// PKCS#8, PKCS#1 or SEC1), speaking HTTP/1.1.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>> {
    let certs = load_certs(cert)?;
    let key_der = load_key(key)?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Webhook(format!("TLS setup: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| {
            Error::Webhook(format!(
                "{CERT_FLAG} {} and {KEY_FLAG} {}: {e}",
                cert.display(),
                key.display()
            ))
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read(flag: &str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::Webhook(format!("{flag} {}: {e}", path.display())))
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let bytes = read(CERT_FLAG, path)?;
    let bad = |m: String| Error::Webhook(format!("{CERT_FLAG} {}: {m}", path.display()));
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not a PEM certificate chain: {e}")))?;
    if certs.is_empty() {
        return Err(bad("no CERTIFICATE block in it".into()));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let bytes = read(KEY_FLAG, path)?;
    // The parser's own message may quote a line of the file: say only what kind of error.
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        let why = match e {
            tokio_rustls::rustls::pki_types::pem::Error::NoItemsFound => {
                "no PRIVATE KEY block in it"
            }
            _ => "not a PEM private key (PKCS#8, PKCS#1 or SEC1)",
        };
        Error::Webhook(format!("{KEY_FLAG} {}: {why}", path.display()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_flag_and_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.crt");
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "hello\n").unwrap();
        let broken = dir.path().join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN PRIVATE KEY-----\nsecret-material!!\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();

        let msg = server_config(&missing, &garbage).unwrap_err().to_string();
        assert!(
            msg.contains("--webhook-cert") && msg.contains("missing.crt"),
            "{msg}"
        );
        let msg = server_config(&garbage, &garbage).unwrap_err().to_string();
        assert!(
            msg.contains("--webhook-cert") && msg.contains("no CERTIFICATE"),
            "{msg}"
        );
        let msg = load_key(&missing).unwrap_err().to_string();
        assert!(
            msg.contains("--webhook-key") && msg.contains("missing.crt"),
            "{msg}"
        );
        let msg = load_key(&garbage).unwrap_err().to_string();
        assert!(
            msg.contains("--webhook-key") && msg.contains("no PRIVATE KEY"),
            "{msg}"
        );
        let msg = load_key(&broken).unwrap_err().to_string();
        assert!(
            msg.contains("--webhook-key") && !msg.contains("secret-material"),
            "{msg}"
        );
    }
}
