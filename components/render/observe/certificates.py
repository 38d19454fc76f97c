"""Certificate expiry: the notAfter of PEM certificates, for the expiry alerts."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime

# --------------------------------------------------------------------------- certificates


def _der_item(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of content, end of content) of the DER item at ``pos``."""
    tag = data[pos]
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        length = int.from_bytes(data[pos:pos + n], "big")
        pos += n
    return tag, pos, pos + length


def _der_time(tag: int, raw: bytes) -> int:
    text = raw.decode("ascii")
    fmt = "%y%m%d%H%M%SZ" if tag == 0x17 else "%Y%m%d%H%M%SZ"
    return int(datetime.strptime(text, fmt).replace(tzinfo=UTC).timestamp())


def certificate_not_after(der: bytes) -> int:
    """NotAfter (unix seconds) of a DER X.509 certificate."""
    _, cert, _ = _der_item(der, 0)           # Certificate
    _, tbs, _ = _der_item(der, cert)         # tbsCertificate
    pos = tbs
    tag, _, end = _der_item(der, pos)
    if tag == 0xA0:                          # [0] version
        pos = end
    for _ in range(3):                       # serial, signature algorithm, issuer
        _, _, pos = _der_item(der, pos)
    _, validity, _ = _der_item(der, pos)
    _, _, after_not_before = _der_item(der, validity)
    tag, start, end = _der_item(der, after_not_before)
    return _der_time(tag, der[start:end])


_PEM = re.compile(r"-----BEGIN CERTIFICATE-----\s*(.+?)\s*-----END CERTIFICATE-----", re.S)


def pem_not_after(pem: str) -> int | None:
    """Earliest NotAfter of the certificates in a PEM bundle, or None if there is none to read."""
    found = []
    for body in _PEM.findall(pem or ""):
        try:
            found.append(certificate_not_after(base64.b64decode("".join(body.split()), validate=True)))
        except (ValueError, IndexError):
            continue
    return min(found) if found else None
