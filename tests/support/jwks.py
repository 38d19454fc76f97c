"""An ES256 JWT signer and the JWKS that verifies it, served on 127.0.0.1 (what SPIRE's default
JWT key and its OIDC discovery provider give OpenBao's jwt auth), for tests and benchmarks that
need JWT logins without a SPIRE server."""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Signer:
    """An ES256 JWT signer and its JWKS (what SPIRE's default JWT key does)."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        nums = self.key.public_key().public_numbers()
        self.jwks = {"keys": [{"kty": "EC", "crv": "P-256", "kid": "bench", "use": "sig", "alg": "ES256",
                               "x": _b64(nums.x.to_bytes(32, "big")), "y": _b64(nums.y.to_bytes(32, "big"))}]}

    def token(self, claims: dict[str, Any]) -> str:
        head = _b64(json.dumps({"alg": "ES256", "kid": "bench", "typ": "JWT"}).encode())
        body = _b64(json.dumps(claims).encode())
        r, s = decode_dss_signature(self.key.sign(f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256())))
        return f"{head}.{body}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


@contextlib.contextmanager
def jwks_server(signer: Signer) -> Iterator[str]:
    body = json.dumps(signer.jwks).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/keys"
    finally:
        httpd.shutdown()
        httpd.server_close()



def svid_claims(issuer: str, spiffe_id: str, audience: str, ttl_s: int = 300) -> dict[str, Any]:
    """A JWT-SVID's claims as SPIRE sets them."""
    now = int(time.time())
    return {"iss": issuer, "sub": spiffe_id, "aud": [audience], "iat": now, "exp": now + ttl_s}
