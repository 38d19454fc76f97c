"""Rego for the Envoy + OPA gateways: one fixed policy, a data document, generated tests.

The policy (:data:`POLICY`, the file ``opa/policy.rego`` beside this module) never changes with
the manifests. What the manifests grant is
data, keyed by service and then by SPIFFE ID::

    data.agentpassport.services[<service>].principals[<SPIFFE ID>] = {
        "agent": "<name>",
        "rules": [{"grant": <index in spec.grants>, "methods": {"GET": true},
                   "paths": {"exact": {"/v1/x": true}, "prefix": ["/v1/y"]},
                   "headers": {"x-h": "v"},
                   "timeWindows": [{"days": ["mon"], "start": "09:00", "end": "17:00",
                                    "timezone": "Europe/London"}]}],
    }

so a decision is one keyed lookup whatever the number of agents. Only active agents get an
entry: suspending an agent removes its entry and every request with its SVID is denied.

In a sharded environment (docs/sharding.md) the base's document lists the services with no
principal and each shard stack's document holds its agents' entries under
``data.agentpassport.shards[<shard>]``; the policy adds one keyed lookup per shard and denies
an identity found in more than one place.

:func:`decide` is a small reference implementation of the same rules. It picks the generated
test cases (a request that must be denied for the intended reason) and states their expected
decision; the tests then check that real OPA agrees, case by case.

The package (everything is re-exported here): :mod:`.policy` (names, and the Rego policy files
``components/render/opa/*.rego``), :mod:`.data` (the data document and revocation list),
:mod:`.reference` (the reference decision) and :mod:`.cases` (the generated ``policy_test.rego``).
"""

from __future__ import annotations

from components.render.rego.cases import (
    DENIED_BY,
    EXACT_DECISION_MAX_RULES,
    REFERENCE_MONDAY,
    RegoCase,
    rego_cases,
    render_tests,
)
from components.render.rego.cases import (
    _at as _at,  # private, read by the tests
)
from components.render.rego.data import (
    REVOCATIONS_FILE,
    authz_data,
    base_data,
    gateway_services,
    grant_rule,
    normalize_prefix,
    principals_of,
    revocation_document,
    revoked_ids,
    service_principals,
    shard_data,
    stack_data,
    with_revocations,
)
from components.render.rego.policy import (
    AGENT_HEADER,
    ALL_METHODS,
    DECISION_PATH,
    DECISION_QUERY,
    DENIED_BODY,
    MASK_POLICY,
    PACKAGE,
    POLICY,
)
from components.render.rego.reference import (
    Decider,
    Request,
    check_request,
    decide,
    rule_failure,
)

__all__ = [
    "AGENT_HEADER",
    "ALL_METHODS",
    "DECISION_PATH",
    "DECISION_QUERY",
    "DENIED_BODY",
    "DENIED_BY",
    "EXACT_DECISION_MAX_RULES",
    "MASK_POLICY",
    "PACKAGE",
    "POLICY",
    "REFERENCE_MONDAY",
    "REVOCATIONS_FILE",
    "Decider",
    "RegoCase",
    "Request",
    "authz_data",
    "base_data",
    "check_request",
    "decide",
    "gateway_services",
    "grant_rule",
    "normalize_prefix",
    "principals_of",
    "rego_cases",
    "render_tests",
    "revocation_document",
    "revoked_ids",
    "rule_failure",
    "service_principals",
    "shard_data",
    "stack_data",
    "with_revocations",
]
