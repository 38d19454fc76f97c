"""Certificate expiry: the notAfter of PEM certificates, for the expiry alerts."""

from __future__ import annotations

import base64
import re

from cryptography import x509


def certificate_not_after(der: bytes) -> int:
    """NotAfter (unix seconds) of a DER X.509 certificate (ValueError if it is not one)."""
    return int(x509.load_der_x509_certificate(der).not_valid_after_utc.timestamp())


_PEM = re.compile(r"-----BEGIN CERTIFICATE-----\s*(.+?)\s*-----END CERTIFICATE-----", re.S)


def pem_not_after(pem: str) -> int | None:
    """Earliest NotAfter of the certificates in a PEM bundle, or None if there is none to read
    (blocks that are not certificates, e.g. placeholders, are skipped)."""
    found = []
    for body in _PEM.findall(pem or ""):
        try:
            found.append(certificate_not_after(base64.b64decode("".join(body.split()), validate=True)))
        except ValueError:
            continue
    return min(found) if found else None
