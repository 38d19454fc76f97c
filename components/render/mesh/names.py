"""Linkerd's API groups and limits, and the annotations, labels and object names Agent Passport uses."""

from __future__ import annotations

# --------------------------------------------------------------------------- names

POLICY_GROUP = "policy.linkerd.io"
SERVER_API = f"{POLICY_GROUP}/v1beta3"
HTTPROUTE_API = f"{POLICY_GROUP}/v1beta3"
AUTHORIZATION_POLICY_API = f"{POLICY_GROUP}/v1alpha1"
MESH_TLS_AUTHENTICATION_API = f"{POLICY_GROUP}/v1alpha1"
NETWORK_AUTHENTICATION_API = f"{POLICY_GROUP}/v1alpha1"

PROXY_PROTOCOLS: dict[str, str] = {"http1": "HTTP/1", "http2": "HTTP/2", "grpc": "gRPC"}
"""Service manifest ``protocol`` -> Linkerd Server ``proxyProtocol``."""
GATEWAY_PROXY_PROTOCOL = "opaque"
"""Agents speak SPIFFE mTLS to the Envoy gateway: Linkerd must not try to detect a protocol."""

MAX_MATCHES_PER_RULE = 8
MAX_RULES_PER_ROUTE = 16
"""HTTPRoute v1beta3 limits: ``spec.rules`` maxItems 16, ``rules[].matches`` maxItems 8."""

INJECT_ANNOTATION = "linkerd.io/inject"
DEFAULT_INBOUND_POLICY_ANNOTATION = "config.linkerd.io/default-inbound-policy"
# A strict stack builds namespaces only with STRICT_INBOUND_POLICIES (components.config.mesh):
# the stack configuration refuses any other default before anything is planned.


TRUST_ROOTS_CONFIGMAP = "linkerd-identity-trust-roots"
TRUST_ROOTS_KEY = "ca-bundle.crt"
ISSUER_SECRET = "linkerd-identity-issuer"
