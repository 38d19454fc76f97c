"""Entry point of the policy pack: builds the PolicyPack and nothing else.

``PolicyPack(...)`` starts the analyzer's gRPC server and blocks, so it lives only here; the
policies themselves are in :mod:`policies` (importable without side effects), which is also
what ``passport check`` evaluates offline.
"""

from policies import PACK_NAME, POLICIES
from pulumi_policy import EnforcementLevel, PolicyPack

PolicyPack(
    name=PACK_NAME,
    policies=list(POLICIES),
    enforcement_level=EnforcementLevel.MANDATORY,
    description="Agent Passport: no static credentials, short-lived attested identities, "
    "one identity per agent, every grant enforced.",
)
