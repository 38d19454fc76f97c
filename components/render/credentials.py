"""Which query parameters carry a credential: the one definition every log mask uses.

The audit collector (OTTL, RE2), the Elasticsearch ingest pipeline (Java regex), the Logstash filter
(Oniguruma) and the gateways' decision-log mask (``opa/mask.rego``, RE2) all mask query strings with
:data:`QUERY_MASK_PATTERN`; only the back-reference syntax of the replacement differs per engine.
The pattern sticks to the syntax the three engines share (no look-around, no possessive or named
groups, no ``\\Q..\\E``).
"""

from __future__ import annotations

MASKED = "[masked]"
"""What a masked credential becomes."""

CREDENTIAL_QUERY = (r"[a-z0-9_.-]*(?:token|secret|password|passwd|signature|api[_-]?key|apikey)"
                    r"|pwd|sig|code|key|auth|x-amz-credential")
"""Query parameters whose value is a credential: any name ending in token, secret, password,
signature or api_key (access_token, client_secret, X-Amz-Signature, ...), and OAuth's code."""

QUERY_MASK_PATTERN = r'(?i)((?:[?&;]|\\u0026)(?:' + CREDENTIAL_QUERY + r')=)[^&;\s"#\\]*'
"""``?access_token=abc&...`` / ``\\u0026api_key=...`` (Go's JSON escapes ``&``) in any URL, path or
raw log line: group 1 is the separator and the name (kept), the value up to the next separator,
blank, quote, fragment or backslash is masked."""

QUERY_MASK_REPLACEMENT_JAVA = "$1" + MASKED
"""Replacement for Java (Elasticsearch ``gsub``) and OTTL ``replace_pattern``."""
QUERY_MASK_REPLACEMENT_RUBY = "\\1" + MASKED
"""Replacement for Ruby (Logstash ``mutate { gsub }``)."""
QUERY_MASK_REPLACEMENT_GO = "${1}" + MASKED
"""Replacement for Go's ``regexp`` (OPA ``regex.replace``)."""
