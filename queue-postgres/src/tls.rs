//! TLS for the driver over rustls with the process's one crypto provider, aws-lc-rs
//! (docs/architecture.md §10 and §16). tokio-postgres knows only `disable | prefer |
//! require` and leaves the certificate to the TLS connector; this one checks it as libpq's
//! `sslmode` says:
//!
//! * `require` — encrypted, the certificate not checked (anyone between the gateway and the
//!   database can pose as the server and read the password and the events);
//! * `verify-ca` — the chain must lead to `tls.ca`; the host name is not checked;
//! * `verify-full` — the chain must lead to `tls.ca` and the certificate must name the host
//!   the URL names (DNS name or IP address).
//!
//! Written here rather than taken from tokio-postgres-rustls, which pulls in `ring` for the
//! channel binding's digest: the workspace keeps one provider (aws-lc-rs) and `ring` out.

use std::fmt;
use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientConfig, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::Digest;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};
use tokio_rustls::TlsConnector;

use crate::config::SslMode;
use crate::error::PgError;

/// The driver's TLS connector for one [`SslMode`]. With `disable` the driver never calls it.
#[derive(Clone)]
pub struct MakeRustlsConnect {
    config: Arc<ClientConfig>,
}

impl fmt::Debug for MakeRustlsConnect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MakeRustlsConnect")
    }
}

impl MakeRustlsConnect {
    /// The connector for `ssl`, checking against the CA certificates in `ca` (PEM) when the
    /// mode verifies. Reads `ca`: call it when connecting, not when validating the config.
    pub fn new(ssl: SslMode, ca: Option<&Path>) -> Result<Self, PgError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| PgError::Connect {
                target: "(TLS setup)".into(),
                detail: e.to_string(),
            })?;
        let verifier: Arc<dyn ServerCertVerifier> = match (ssl, ca) {
            (SslMode::Disable | SslMode::Require, None) => Arc::new(NoVerification(provider)),
            (_, Some(ca)) => {
                let webpki = WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots(ca)?),
                    provider.clone(),
                )
                .build()
                .map_err(|e| PgError::Ca {
                    path: ca.to_owned(),
                    detail: e.to_string(),
                })?;
                match ssl {
                    SslMode::VerifyFull => webpki,
                    _ => Arc::new(ChainOnly(webpki)),
                }
            }
            // Validation refuses a verifying mode without `tls.ca`; refuse here too.
            (SslMode::VerifyCa | SslMode::VerifyFull, None) => {
                return Err(PgError::Connect {
                    target: "(TLS setup)".into(),
                    detail: format!("sslmode {} needs tls.ca", ssl.name()),
                });
            }
        };
        let config = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(MakeRustlsConnect {
            config: Arc::new(config),
        })
    }
}

/// The CA certificates in the PEM file `path`.
fn roots(path: &Path) -> Result<RootCertStore, PgError> {
    let ca_error = |detail: String| PgError::Ca {
        path: path.to_owned(),
        detail,
    };
    let pem = std::fs::read(path).map_err(|e| ca_error(e.to_string()))?;
    let mut store = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| ca_error(format!("not a PEM certificate: {e}")))?;
        store
            .add(cert)
            .map_err(|e| ca_error(format!("not a CA certificate: {e}")))?;
    }
    if store.is_empty() {
        return Err(ca_error("holds no certificate".into()));
    }
    Ok(store)
}

/// `verify-ca`: webpki's checks except the host name.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // webpki checks the chain first and the name last: a name error means the chain
        // was good.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `require`: any certificate, but the handshake's signatures are still checked (the session
/// is encrypted to whoever holds the certificate's key, whoever that is).
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

impl<S> MakeTlsConnect<S> for MakeRustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, hostname: &str) -> Result<RustlsConnect, io::Error> {
        let name = ServerName::try_from(hostname.to_owned()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("`{hostname}` is not a host name TLS can check"),
            )
        })?;
        Ok(RustlsConnect {
            name,
            connector: TlsConnector::from(self.config.clone()),
        })
    }
}

/// One connection's TLS handshake.
pub struct RustlsConnect {
    name: ServerName<'static>,
    connector: TlsConnector,
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let stream = self.connector.connect(self.name, stream).await?;
            Ok(RustlsStream(Box::new(stream)))
        })
    }
}

/// A TLS connection to the database.
pub struct RustlsStream<S>(Box<tokio_rustls::client::TlsStream<S>>);

impl<S> tokio_postgres::tls::TlsStream for RustlsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// `tls-server-end-point` (RFC 5929): the server certificate's hash, with the hash of
    /// its signature algorithm (SHA-256 for SHA-1 or MD5), for SCRAM-SHA-256-PLUS.
    fn channel_binding(&self) -> ChannelBinding {
        let (_, session) = self.0.get_ref();
        let Some(cert) = session.peer_certificates().and_then(|c| c.first()) else {
            return ChannelBinding::none();
        };
        match signature_hash(cert.as_ref()) {
            Some(Hash::Sha256) => {
                ChannelBinding::tls_server_end_point(sha2::Sha256::digest(cert).to_vec())
            }
            Some(Hash::Sha384) => {
                ChannelBinding::tls_server_end_point(sha2::Sha384::digest(cert).to_vec())
            }
            Some(Hash::Sha512) => {
                ChannelBinding::tls_server_end_point(sha2::Sha512::digest(cert).to_vec())
            }
            // Ed25519 and unknown algorithms have no end-point binding.
            None => ChannelBinding::none(),
        }
    }
}

#[derive(Debug, PartialEq)]
enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

/// The hash that `tls-server-end-point` uses for a DER certificate: that of its
/// `signatureAlgorithm` (the second element of the outer SEQUENCE).
fn signature_hash(der: &[u8]) -> Option<Hash> {
    let (outer, _) = der_element(der, 0x30)?;
    let (_, after_tbs) = der_element(outer, 0x30)?;
    let (algorithm, _) = der_element(after_tbs, 0x30)?;
    let (oid, _) = der_element(algorithm, 0x06)?;
    // RSA PKCS#1 (1.2.840.113549.1.1.x), RSA-PSS is left out (its hash is in the parameters).
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    // ECDSA (1.2.840.10045.4.1 and 1.2.840.10045.4.3.x).
    const ECDSA_SHA1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01];
    const ECDSA_SHA2: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03];
    if let Some(&last) = oid
        .strip_prefix(RSA)
        .and_then(|r| r.first())
        .filter(|_| oid.len() == 9)
    {
        return match last {
            // md5, sha1, sha256
            4 | 5 | 11 => Some(Hash::Sha256),
            12 => Some(Hash::Sha384),
            13 => Some(Hash::Sha512),
            _ => None,
        };
    }
    if oid == ECDSA_SHA1 {
        return Some(Hash::Sha256);
    }
    if let Some(&last) = oid
        .strip_prefix(ECDSA_SHA2)
        .and_then(|r| r.first())
        .filter(|_| oid.len() == 8)
    {
        return match last {
            2 => Some(Hash::Sha256),
            3 => Some(Hash::Sha384),
            4 => Some(Hash::Sha512),
            _ => None,
        };
    }
    None
}

/// The content of the DER element with `tag` at the start of `der`, and what follows it.
fn der_element(der: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&first, rest) = der.split_first()?;
    if first != tag {
        return None;
    }
    let (&len0, rest) = rest.split_first()?;
    let (len, rest) = if len0 < 0x80 {
        (usize::from(len0), rest)
    } else {
        let n = usize::from(len0 & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some(rest.split_at(len))
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_channel_binding_hash_follows_the_certificate_signature() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)
            .unwrap_or_else(|e| panic!("{e}"));
        let params =
            rcgen::CertificateParams::new(vec!["db".into()]).unwrap_or_else(|e| panic!("{e}"));
        let cert = params.self_signed(&key).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(signature_hash(cert.der()), Some(Hash::Sha384));

        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .unwrap_or_else(|e| panic!("{e}"));
        let params =
            rcgen::CertificateParams::new(vec!["db".into()]).unwrap_or_else(|e| panic!("{e}"));
        let cert = params.self_signed(&key).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(signature_hash(cert.der()), Some(Hash::Sha256));
        assert_eq!(signature_hash(b"not a certificate"), None);
    }
}
