"""Agent Passport: short-lived, attested, revocable identities for autonomous AI agents.

The package splits into pure layers that import no Pulumi and Pulumi components that wire their
output into resources:

* ``manifest``, ``config`` (and ``labels``, ``identity``) — the inputs and the names;
* ``platform_model`` (+ ``collisions``) — one stack's :class:`~components.platform_model.Platform`
  (the glossary of what "platform" names is in its docstring), :func:`load_platform`;
* ``compile`` — every subsystem's rules, once: the validated plans or every problem;
* ``render`` — plans in, Kubernetes objects and files out (``passport render``);
* the components (``trust``, ``spire``, ``mesh``, ``authz``, ``vault``, ``windows``, ``aws``,
  ``observe``, composed by ``platform.AgentPassport``; CAs by ``ca``) — plans in, resources out.
"""

API_VERSION = "passport.agentpassport.dev/v1alpha1"
PROJECT = "agent-passport"
