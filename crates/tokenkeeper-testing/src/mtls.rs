//! Mutual TLS at the test server (RFC 8705): a TLS listener that asks for client
//! certificates, client authentication with them (`tls_client_auth`: a certificate from the
//! test CA valid for the client's registered DNS name; `self_signed_tls_client_auth`: the
//! client's registered certificate), and certificate-bound tokens (`cnf.x5t#S256`).
//!
//! The certificates are fixtures in `certs/` (see `certs/generate.sh`): public test material,
//! not secrets.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use base64::Engine as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use sha2::{Digest, Sha256};

/// The test certificates (PEM): a CA, the server's certificate, and client certificates.
pub mod certs {
    /// The test CA: it signs the server's certificate and the `worker` client certificates.
    pub const CA: &str = include_str!("../certs/ca.pem");
    /// The test server's certificate (`localhost`, `127.0.0.1`).
    pub const SERVER_CERT: &str = include_str!("../certs/server.pem");
    /// Its key.
    pub const SERVER_KEY: &str = include_str!("../certs/server.key");
    /// A client certificate from the CA, SAN `DNS:worker.clients.test`.
    pub const WORKER_CERT: &str = include_str!("../certs/worker.pem");
    /// Its key.
    pub const WORKER_KEY: &str = include_str!("../certs/worker.key");
    /// The same client after a rotation: another key, the same name.
    pub const WORKER2_CERT: &str = include_str!("../certs/worker2.pem");
    /// Its key.
    pub const WORKER2_KEY: &str = include_str!("../certs/worker2.key");
    /// A self-signed client certificate, SAN `DNS:self.clients.test`.
    pub const SELF_CERT: &str = include_str!("../certs/self.pem");
    /// Its key.
    pub const SELF_KEY: &str = include_str!("../certs/self.key");
    /// The DNS name in the `worker` certificates.
    pub const WORKER_DNS: &str = "worker.clients.test";
}

/// The certificate the TLS client presented, if any (a request extension on the mTLS
/// listener).
#[derive(Clone, Debug, Default)]
pub(crate) struct PeerCertificate(pub(crate) Option<Arc<Vec<u8>>>);

/// The DER blocks of the PEM `label` sections of `pem`.
pub(crate) fn pem_blocks(pem: &str, label: &str) -> Vec<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let mut blocks = Vec::new();
    let mut rest = pem;
    while let Some(start) = rest.find(&begin) {
        let after = &rest[start + begin.len()..];
        let Some(stop) = after.find(&end) else { break };
        let body: String = after[..stop]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(body) {
            blocks.push(der);
        }
        rest = &after[stop + end.len()..];
    }
    blocks
}

/// `x5t#S256` of a DER certificate: base64url(SHA-256(DER)).
pub fn thumbprint(der: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(der))
}

/// The `x5t#S256` of the first certificate of a PEM text.
pub fn pem_thumbprint(pem: &str) -> String {
    pem_blocks(pem, "CERTIFICATE")
        .first()
        .map(|der| thumbprint(der))
        .unwrap_or_default()
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Asks for a client certificate and takes any (or none): who the certificate names is
/// checked at the token endpoint, per client, as RFC 8705 has it — a self-signed certificate
/// must reach it too. The handshake signature proves the client holds the key.
#[derive(Debug)]
struct AnyClientCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ClientCertVerifier for AnyClientCertificate {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
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
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
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

/// Checks a `tls_client_auth` certificate: it chains to the test CA, is valid now for client
/// authentication, and names `dns`.
pub(crate) fn verify_ca_issued(der: &[u8], dns: &str) -> Result<(), String> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in pem_blocks(certs::CA, "CERTIFICATE") {
        roots
            .add(CertificateDer::from(ca))
            .map_err(|e| e.to_string())?;
    }
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| e.to_string())?;
    let cert = CertificateDer::from(der.to_vec());
    verifier
        .verify_client_cert(&cert, &[], UnixTime::now())
        .map_err(|e| format!("certificate refused: {e}"))?;
    let parsed = rustls::server::ParsedCertificate::try_from(&cert).map_err(|e| e.to_string())?;
    let name = ServerName::try_from(dns.to_owned()).map_err(|e| e.to_string())?;
    rustls::client::verify_server_name(&parsed, &name)
        .map_err(|_| format!("the certificate does not name {dns}"))
}

/// Serves `router` over TLS on a new loopback port, with each request carrying the client's
/// certificate as a [`PeerCertificate`] extension. Returns the address and the task.
pub(crate) async fn serve_tls(
    router: Router,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let certs: Vec<CertificateDer<'static>> = pem_blocks(certs::SERVER_CERT, "CERTIFICATE")
        .into_iter()
        .map(CertificateDer::from)
        .collect();
    let key = pem_blocks(certs::SERVER_KEY, "PRIVATE KEY")
        .into_iter()
        .next()
        .map(|der| PrivateKeyDer::Pkcs8(der.into()))
        .ok_or_else(|| std::io::Error::other("no server key"))?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .with_client_cert_verifier(Arc::new(AnyClientCertificate(provider())))
        .with_single_cert(certs, key)
        .map_err(std::io::Error::other)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, router) = (acceptor.clone(), router.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let peer = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| Arc::new(c.to_vec()));
                let service = hyper_util::service::TowerToHyperService::new(
                    router.layer(axum::Extension(PeerCertificate(peer))),
                );
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await;
            });
        }
    });
    Ok((addr, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixtures_verify_as_intended() {
        let der = |pem| pem_blocks(pem, "CERTIFICATE").remove(0);
        assert!(verify_ca_issued(&der(certs::WORKER_CERT), certs::WORKER_DNS).is_ok());
        assert!(verify_ca_issued(&der(certs::WORKER2_CERT), certs::WORKER_DNS).is_ok());
        assert!(verify_ca_issued(&der(certs::WORKER_CERT), "other.clients.test").is_err());
        assert!(verify_ca_issued(&der(certs::SELF_CERT), "self.clients.test").is_err());
        assert_ne!(
            pem_thumbprint(certs::WORKER_CERT),
            pem_thumbprint(certs::WORKER2_CERT)
        );
        assert_eq!(pem_thumbprint(certs::SELF_CERT).len(), 43);
    }
}
