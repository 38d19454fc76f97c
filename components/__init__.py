"""Agent Passport: short-lived, attested, revocable identities for autonomous AI agents.

The package splits into pure layers (``manifest``, ``config``, ``identity``, ``platform_model``,
``render``) that import no Pulumi, and Pulumi components (``trust``, ``spire``, ``mesh``, ...)
that wire the pure output into resources.
"""

API_VERSION = "passport.agentpassport.dev/v1alpha1"
PROJECT = "agent-passport"
