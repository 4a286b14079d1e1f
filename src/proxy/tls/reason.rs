//! Why a TLS handshake failed, as one of a few fixed label values, read from the rustls error inside
//! the `io::Error` tokio-rustls returns: our own verification verdict (`CertificateError`, a missing
//! client certificate) or the alert the peer sent about ours. The labels: unknown_ca, expired (or not
//! yet valid), hostname_mismatch, no_client_cert, bad_certificate, protocol, io, timeout (counted by
//! the callers, which own the clock), other.

use rustls::{AlertDescription, CertificateError, Error};
use std::io;

/// The reason label of a failed handshake.
pub fn of(e: &io::Error) -> &'static str {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) {
        Some(e) => of_rustls(e),
        None => "io",
    }
}

fn of_rustls(e: &Error) -> &'static str {
    match e {
        Error::InvalidCertificate(c) => of_certificate(c),
        Error::NoCertificatesPresented => "no_client_cert",
        Error::AlertReceived(a) => of_alert(*a),
        Error::InappropriateMessage { .. }
        | Error::InappropriateHandshakeMessage { .. }
        | Error::InvalidMessage(_)
        | Error::PeerIncompatible(_)
        | Error::PeerMisbehaved(_)
        | Error::DecryptError
        | Error::NoApplicationProtocol
        | Error::PeerSentOversizedRecord
        | Error::UnsupportedNameType => "protocol",
        _ => "other",
    }
}

fn of_certificate(c: &CertificateError) -> &'static str {
    match c {
        CertificateError::UnknownIssuer => "unknown_ca",
        CertificateError::Expired
        | CertificateError::ExpiredContext { .. }
        | CertificateError::NotValidYet
        | CertificateError::NotValidYetContext { .. } => "expired",
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            "hostname_mismatch"
        }
        _ => "bad_certificate",
    }
}

/// The peer refused the handshake with `alert`, usually about the certificate sinew presented.
fn of_alert(alert: AlertDescription) -> &'static str {
    match alert {
        AlertDescription::UnknownCA => "unknown_ca",
        AlertDescription::CertificateExpired => "expired",
        AlertDescription::CertificateRequired => "no_client_cert",
        AlertDescription::BadCertificate
        | AlertDescription::UnsupportedCertificate
        | AlertDescription::CertificateRevoked
        | AlertDescription::CertificateUnknown
        | AlertDescription::AccessDenied => "bad_certificate",
        _ => "protocol",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wrapped(e: Error) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }

    #[test]
    fn rustls_errors_map_to_their_reason() {
        let cases = [
            (
                Error::InvalidCertificate(CertificateError::UnknownIssuer),
                "unknown_ca",
            ),
            (
                Error::InvalidCertificate(CertificateError::Expired),
                "expired",
            ),
            (
                Error::InvalidCertificate(CertificateError::NotValidForName),
                "hostname_mismatch",
            ),
            (
                Error::InvalidCertificate(CertificateError::BadSignature),
                "bad_certificate",
            ),
            (Error::NoCertificatesPresented, "no_client_cert"),
            (
                Error::AlertReceived(AlertDescription::CertificateRequired),
                "no_client_cert",
            ),
            (
                Error::AlertReceived(AlertDescription::UnknownCA),
                "unknown_ca",
            ),
            (
                Error::AlertReceived(AlertDescription::HandshakeFailure),
                "protocol",
            ),
            (Error::DecryptError, "protocol"),
            (Error::General("x".into()), "other"),
        ];
        for (e, want) in cases {
            let label = format!("{e:?}");
            assert_eq!(of(&wrapped(e)), want, "{label}");
        }
        assert_eq!(of(&io::Error::from(io::ErrorKind::UnexpectedEof)), "io");
    }
}
