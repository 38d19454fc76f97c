"""``passport ca status``: the thin I/O that reads the deployed CA certificates for
:mod:`components.ca_deployed` — the stack's Pulumi state (``pulumi stack export``, with the
backend and passphrase :func:`components.engine.settings_for` resolves, as ``passport up`` uses)
and, under ``mesh.anchorCustody: cert-manager``, cert-manager's Secrets in the stack's cluster
(``kubectl`` with the kubeconfig and context the stack names).

Nothing here raises: a source that cannot be read becomes one note saying which and why, and the
rest of the status (SPIRE's rows above all) is printed regardless.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from components.ca_deployed import cert_manager_secrets, cluster_rows, state_rows
from components.ca_status import StatusRow
from components.platform_model import Platform

EXPORT_TIMEOUT_S = 120.0
KUBECTL_TIMEOUT_S = 30.0


@dataclass
class Deployed:
    """What was read from the deployed stack: rows, and one note per source that could not be read."""

    rows: list[StatusRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def export_state(stack: str, root: Path, environ: Mapping[str, str] | None = None,
                 timeout: float = EXPORT_TIMEOUT_S) -> tuple[dict[str, Any] | None, str]:
    """The stack's exported state, or None and why it could not be read (one line)."""
    from components.engine import EngineUnavailable, find_pulumi, settings_for
    from components.errors import ConfigError

    try:
        settings = settings_for(stack, root, environ)
    except (EngineUnavailable, ConfigError) as exc:
        return None, str(exc).splitlines()[0]
    pulumi = find_pulumi()
    if pulumi is None:
        return None, "the Pulumi CLI (`pulumi`) is not installed: scripts/bootstrap-tools --only pulumi"
    try:
        done = subprocess.run([pulumi, "stack", "export", "--stack", stack], cwd=root, env=settings.env,
                              capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return None, f"`pulumi stack export` did not finish within {timeout:.0f}s ({settings.backend_url})"
    except OSError as exc:
        return None, f"cannot run {pulumi}: {exc.strerror or exc}"
    if done.returncode != 0:
        why = _last_line(done.stderr) or _last_line(done.stdout) or f"exit status {done.returncode}"
        if "no stack named" in why.lower():
            why = f"no stack {stack!r} in {settings.backend_url} (not deployed yet: `passport up --stack {stack}`)"
        return None, why
    try:
        return dict(json.loads(done.stdout)), ""
    except ValueError as exc:
        return None, f"`pulumi stack export` printed no JSON ({exc})"


def read_objects(kubectl: str, resource: str, wanted: list[str], kubeconfig: str | None, context: str | None,
                 timeout: float = KUBECTL_TIMEOUT_S) -> dict[str, dict[str, Any] | str]:
    """``namespace/name`` -> the object (``kubectl get RESOURCE -o json``), or why it was not read."""
    base = [kubectl, *(["--kubeconfig", kubeconfig] if kubeconfig else []),
            *(["--context", context] if context else [])]
    out: dict[str, dict[str, Any] | str] = {}
    for where in wanted:
        ns, name = where.split("/", 1)
        try:
            done = subprocess.run([*base, "get", resource, name, "-n", ns, "-o", "json",
                                   f"--request-timeout={int(timeout)}s"],
                                  capture_output=True, text=True, timeout=timeout + 5, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            out[where] = f"kubectl failed: {exc}"
            continue
        if done.returncode != 0:
            out[where] = _last_line(done.stderr) or f"kubectl exit status {done.returncode}"
            continue
        try:
            out[where] = dict(json.loads(done.stdout))
        except ValueError as exc:
            out[where] = f"kubectl printed no JSON ({exc})"
    return out


def read_deployed(platform: Platform, root: Path, now: datetime, *, state: dict[str, Any] | None = None,
                  kubectl: str | None = None, environ: Mapping[str, str] | None = None) -> Deployed:
    """The deployed CA certificates of ``platform``'s stack, from its state and its cluster.

    ``state``: an exported state already read (``--state FILE``); otherwise it is exported here."""
    from components.render.mesh.identity import anchor_custody, linkerd_identity_profile
    from components.render.trust import trust_profile

    cfg = platform.config
    got = Deployed()
    trust = trust_profile(cfg) if cfg.trust.upstream != "spire" else None
    linkerd = linkerd_identity_profile(cfg) if cfg.subsystems.mesh else None
    in_state = linkerd if linkerd is not None and anchor_custody(cfg) != "cert-manager" else None
    if trust is not None or in_state is not None:
        if state is None:
            state, why = export_state(platform.stack, root, environ)
            if state is None:
                got.notes.append(f"Pulumi state of stack {platform.stack} not read: {why}")
        if state is not None:
            rows, notes = state_rows(state, trust, in_state, now)
            got.rows += rows
            got.notes += [f"Pulumi state: {n}" for n in notes]
            if not rows:
                got.notes.append(f"Pulumi state of stack {platform.stack}: no CA certificate found (not deployed?)")
    if linkerd is not None and in_state is None:
        k8s = cfg.kubernetes
        if k8s.mode != "cluster":
            got.notes.append(f"cluster not read: stack {platform.stack} renders only (kubernetes.mode "
                             f"{k8s.mode}); cert-manager's Linkerd certificates are in the cluster it is applied to")
        elif kubectl is None:
            got.notes.append("cluster not read: kubectl not found (pass --kubectl-bin or put it on PATH)")
        elif k8s.kubeconfig and not (root / k8s.kubeconfig).is_file():
            got.notes.append(f"cluster not read: no kubeconfig {k8s.kubeconfig} (kubernetes.kubeconfig of stack "
                             f"{platform.stack}; the local stack's comes from scripts/local-cluster start)")
        else:
            kubeconfig = str(root / k8s.kubeconfig) if k8s.kubeconfig else None
            wanted = list(cert_manager_secrets(linkerd).values())
            secrets = read_objects(kubectl, "secret", wanted, kubeconfig, k8s.context)
            # cert-manager's own renewal plan, where its Certificates can be read (same names)
            certificates = ({} if all(isinstance(v, str) for v in secrets.values()) else
                            read_objects(kubectl, "certificates.cert-manager.io", wanted, kubeconfig, k8s.context))
            rows, notes = cluster_rows(secrets, linkerd, now, certificates)
            got.rows += rows
            got.notes += notes
    return got
