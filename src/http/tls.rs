//! TLS for `https://` listeners: rustls (TLS 1.2 and 1.3 only) with the PEM key and certificate
//! chain named by `private_key_file` and `certificate_file`, read once at startup.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsSettings;

/// The server side of TLS, or why it cannot be set up (a one-line startup error).
pub fn server_config(settings: &TlsSettings) -> Result<rustls::ServerConfig, String> {
    let certificates: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(&settings.certificate_file)
            .and_then(|certificates| certificates.collect::<Result<_, _>>())
            .map_err(|error| {
                format!(
                    "certificate_file {}: {error}",
                    settings.certificate_file.display()
                )
            })?;
    if certificates.is_empty() {
        return Err(format!(
            "certificate_file {}: no certificate in it",
            settings.certificate_file.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&settings.private_key_file).map_err(|error| {
        format!(
            "private_key_file {}: {error}",
            settings.private_key_file.display()
        )
    })?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|error| format!("TLS: {error}"))?
        .with_no_client_auth()
        .with_single_cert(certificates, key)
        .map_err(|error| format!("TLS: the key does not fit the certificate: {error}"))
}
