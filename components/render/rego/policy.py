"""The gateways' Rego policy and decision-log mask (the files ``components/render/opa/*.rego``) and the
names they use.
"""

from __future__ import annotations

import json
from importlib import resources

from components.manifest.models import HttpMethod
from components.render import credentials

PACKAGE = "agentpassport.authz"
DECISION_PATH = "agentpassport/authz/decision"
"""opa-envoy-plugin ``path``: the decision object Envoy's ext_authz filter receives."""
DECISION_QUERY = "data.agentpassport.authz.decision"
AGENT_HEADER = "x-agentpassport-agent"
DENIED_BODY = "forbidden by Agent Passport policy\n"
ALL_METHODS: tuple[HttpMethod, ...] = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _policy_file(name: str) -> str:
    """A Rego file shipped with the package (``components/render/opa/``; CI runs ``opa fmt`` and
    ``opa check --strict`` on them)."""
    return resources.files("components.render").joinpath(f"opa/{name}").read_text(encoding="utf-8")


POLICY = _policy_file("policy.rego")
"""The gateways' policy (``opa/policy.rego``): identical for every stack."""


def _mask_policy() -> str:
    """``opa/mask.rego`` with the credential query pattern of :mod:`components.render.credentials`."""
    text = _policy_file("mask.rego")
    for placeholder, value in (("@QUERY_MASK_PATTERN@", credentials.QUERY_MASK_PATTERN),
                               ("@QUERY_MASK_REPLACEMENT@", credentials.QUERY_MASK_REPLACEMENT_GO)):
        literal = f'"{placeholder}"'
        if literal not in text:
            raise RuntimeError(f"opa/mask.rego lost its {placeholder} placeholder")
        text = text.replace(literal, json.dumps(value))
    return text


MASK_POLICY = _mask_policy()
"""Keeps credentials out of the gateways' decision logs (``opa/mask.rego``)."""
