"""What a stack or a manifest can get wrong about SPIRE (run once per stack by components.compile)."""

from __future__ import annotations

from urllib.parse import urlparse

from components.config import NAMESPACE
from components.durations import seconds
from components.errors import Problem, input_error
from components.platform_model import Platform, ResolvedAgent

# --------------------------------------------------------------------------- validation


def spire_problems(platform: Platform) -> list[Problem]:
    """Everything wrong with the SPIRE settings and the agents' registrations; empty if fine."""
    cfg = platform.config
    sp = cfg.spire
    file = platform.config_file
    out: list[Problem] = []

    def cp(field: str, message: str) -> None:
        out.append(Problem(file, None, f"{NAMESPACE}:{field}", message))

    if len(cfg.trust_domain) > 255:
        cp("trustDomain", "a SPIFFE trust domain has at most 255 characters")
    if seconds(sp.default_jwt_svid_ttl) > seconds(cfg.limits.max_jwt_svid_ttl):
        cp(
            "spire.defaultJwtSvidTtl",
            f"{sp.default_jwt_svid_ttl} is above limits.maxJwtSvidTtl "
            f"({cfg.limits.max_jwt_svid_ttl}); JWT-SVIDs are bearer tokens, keep them short",
        )
    if seconds(sp.default_x509_svid_ttl) > seconds(cfg.limits.max_x509_svid_ttl):
        cp(
            "spire.defaultX509SvidTtl",
            f"{sp.default_x509_svid_ttl} is above limits.maxX509SvidTtl ({cfg.limits.max_x509_svid_ttl})",
        )
    # caTtl/6 and caTtl < trust.intermediateLifetime are stack-config rules
    # (components.config.lifetime_problems): they refuse the stack before anything renders.
    if sp.replicas > 1 and sp.datastore != "postgres":
        cp("spire.replicas", f"{sp.replicas} replicas need datastore postgres: sqlite3 cannot be shared")
    if sp.datastore == "postgres" and sp.datastore_connection_secret is None:
        cp(
            "spire.datastoreConnectionSecret",
            "datastore postgres needs the name of a secret config key "
            "holding the connection string (pulumi config set --secret <name> ...)",
        )
    issuer = urlparse(cfg.jwt_issuer)
    if issuer.scheme not in ("https", "http") or not issuer.hostname:
        cp("spire.jwtIssuer", f"{cfg.jwt_issuer!r} is not an absolute URL (https://host[/path])")
    elif issuer.scheme != "https" and cfg.is_strict:
        cp("spire.jwtIssuer", "strict stacks serve the OIDC issuer over https (Vault and AWS fetch its keys)")
    elif issuer.query or issuer.fragment or issuer.path.endswith("/"):
        cp("spire.jwtIssuer", f"{cfg.jwt_issuer!r}: no query, fragment or trailing '/' in an issuer URL")
    for agent in platform.active_agents:
        out.extend(_agent_problems(platform, agent))
    return out


def _agent_problems(platform: Platform, agent: ResolvedAgent) -> list[Problem]:
    out: list[Problem] = []
    src = agent.source

    def mp(loc: tuple[str | int, ...], message: str) -> None:
        from components.manifest.loader import format_loc

        out.append(Problem(src.file, src.line_of(loc), format_loc(loc), message))

    # Reserved SPIFFE paths (/spire/, /node/) are refused by the platform model for every stack.
    vm = agent.manifest.spec.platform.vm
    if vm is not None and vm.attestation == "aws_iid" and not vm.aws_instance_tags and not vm.node_selectors:
        mp(
            ("spec", "platform", "vm"),
            "aws_iid attestation without awsInstanceTags or nodeSelectors would "
            "give this identity to every EC2 instance in the region; add the instances' tags",
        )
    return out


def check(platform: Platform) -> None:
    """Raise every problem :func:`spire_problems` finds (ConfigError, ManifestError, or both: InputError)."""
    problems = spire_problems(platform)
    if problems:
        raise input_error(problems, [platform.config_file])
