"""TLS for every port of ``mqlflow serve``: the wire port, ``--metrics-port`` and the console.

One server context from a PEM file holding the certificate chain and its private key,
the form mongod's ``--tlsCertificateKeyFile`` takes
(https://www.mongodb.com/docs/manual/tutorial/configure-ssl/), so the same file serves
both. With a CA file, clients must also present a certificate that CA signed (mutual
TLS, like mongod's ``--tlsCAFile`` without ``--tlsAllowConnectionsWithoutCertificates``).
TLS 1.2 is the oldest version offered. The paths come from the operator's command line,
never from a client.
"""

from __future__ import annotations

import ssl
from pathlib import Path


class TlsConfigError(RuntimeError):
    """The TLS files cannot be used; the service does not start."""


def server_context(cert_key_file: Path, ca_file: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert_key_file)
    except (OSError, ssl.SSLError) as e:
        raise TlsConfigError(
            f"--tls-certificate-key-file {cert_key_file}: cannot load a certificate and its private key "
            f"from it ({e.__class__.__name__}: {e}); it must be one PEM file holding both"
        ) from None
    if ca_file is not None:
        try:
            ctx.load_verify_locations(cafile=ca_file)
        except (OSError, ssl.SSLError) as e:
            raise TlsConfigError(
                f"--tls-ca-file {ca_file}: cannot load CA certificates from it ({e.__class__.__name__}: {e})"
            ) from None
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx
