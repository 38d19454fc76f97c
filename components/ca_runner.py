"""``passport ca status | rotate | compromise``: the thin runner around :mod:`components.ca_lifecycle`.

It calls the ``spire-server`` CLI over the server's admin socket (``-output json``), feeds what
it prints to the pure planners, and carries out their next step, printing each with what it
waits for and for how long. It uses only the operator's access to that socket. Nothing is
tainted or revoked without ``--yes``; ``--dry-run`` / no ``--yes`` only reads and prints.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from components.ca_lifecycle import (
    CONFIGMAP_SYNC,
    CaError,
    CompromisePlan,
    Journal,
    Kind,
    ServerState,
    human_duration,
    plan_compromise,
    plan_rotation,
    server_state,
    stack_ttls,
)
from components.ca_sources import Deployed
from components.ca_status import (
    StatusRow,
    cert_row,
    config_rows,
    format_json,
    format_table,
    spire_key_custody,
    spire_rows,
)
from components.durations import format_duration
from components.platform_model import Platform
from components.render.trust import pem_blocks

SPIRE_TIMEOUT_S = 30.0
UNREACHABLE = ("connection refused", "no such file or directory", "connect: ", "error connecting", "unavailable")


@dataclass(frozen=True)
class Clock:
    """Time, injectable: tests and the drill pass their own."""

    now: Callable[[], datetime] = lambda: datetime.now(UTC)
    sleep: Callable[[float], None] = time.sleep


class SpireAdmin:
    """``spire-server <command> -socketPath S -output json``, one call each; errors as one line."""

    def __init__(self, binary: str, socket: str, timeout: float = SPIRE_TIMEOUT_S) -> None:
        self.binary, self.socket, self.timeout = binary, socket, timeout

    def run(self, *args: str) -> dict[str, Any]:
        if not os.path.exists(self.socket):
            raise CaError(f"the SPIRE server cannot be reached: no admin socket at {self.socket}")
        cmd = [self.binary, *args, "-socketPath", self.socket, "-output", "json"]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout, check=False)
        except subprocess.TimeoutExpired:
            raise CaError(f"the SPIRE server at {self.socket} did not answer `{' '.join(args)}` within "
                          f"{self.timeout:.0f}s") from None
        except OSError as exc:
            raise CaError(f"cannot run {self.binary}: {exc.strerror or exc}") from None
        if done.returncode != 0:
            text = (done.stderr.strip() or done.stdout.strip()).splitlines()
            first = text[0] if text else f"exit status {done.returncode}"
            if any(marker in first.lower() for marker in UNREACHABLE):
                raise CaError(f"the SPIRE server at {self.socket} cannot be reached: {first}")
            raise CaError(f"spire-server {' '.join(args)}: {first}")
        return dict(json.loads(done.stdout or "{}"))

    def state(self) -> ServerState:
        x509_show = self.run("localauthority", "x509", "show")
        try:
            jwt_show: dict[str, Any] | None = self.run("localauthority", "jwt", "show")
        except CaError as exc:
            if "JWT functionality is disabled" not in str(exc):
                raise
            jwt_show = None
        return server_state(x509_show, jwt_show, self.run("bundle", "show"))

    def agent_serials(self) -> dict[str, str]:
        """SPIFFE ID -> serial number of the X.509-SVID each attested agent holds now."""
        agents = self.run("agent", "list").get("agents") or []
        out = {}
        for a in agents:
            ident = a.get("id") or {}
            out[f"spiffe://{ident.get('trust_domain', '')}{ident.get('path', '')}"] = str(
                a.get("x509svid_serial_number", ""))
        return out

    def prepare(self, kind: Kind) -> str:
        resp = self.run("localauthority", kind, "prepare")
        return str((resp.get("prepared_authority") or {}).get("authority_id", ""))

    def local(self, action: str, kind: Kind, authority_id: str) -> None:
        self.run("localauthority", kind, action, "-authorityID", authority_id)

    def upstream(self, action: str, ski: str) -> None:
        self.run("upstreamauthority", action, "-subjectKeyID", ski)


def find_spire_server(explicit: str | None) -> str | None:
    from components.revoke import find_spire_server as find

    return find(explicit)


def _require_spire(platform: Platform) -> None:
    if not platform.config.subsystems.spire:
        raise CaError(f"stack {platform.stack} has no SPIRE (subsystems.spire is false): nothing to rotate")


# --------------------------------------------------------------------------- status


def status(platform: Platform, admin: SpireAdmin | None, out: TextIO, *, fmt: str = "table",
           trust_bundle_pem: str | None = None, clock: Clock = Clock(),
           deployed: Callable[[datetime], Deployed] | None = None) -> int:
    """Every authority in the stack's trust chain, where its key lives, and what happens next.

    ``deployed`` reads the deployed certificates (Pulumi state, the cluster; see
    :func:`components.ca_sources.read_deployed`): their rows replace the configuration's
    placeholders of the same layer; a source it could not read is a note, never an error."""
    now = clock.now()
    rows: list[StatusRow] = []
    found = deployed(now) if deployed is not None else Deployed()
    covered = {r.layer for r in found.rows}
    if trust_bundle_pem:  # the deployed roots (e.g. `pulumi stack output trustBundlePem`): their dates
        custody = {"tls": "pulumi-tls", "vault-pki": "Vault PKI", "aws-pca": "AWS Private CA"}.get(
            platform.config.trust.upstream, "")
        for i, pem in enumerate(pem_blocks(trust_bundle_pem)):
            try:
                rows.append(cert_row("root" if i == 0 else "previous-root", custody, "deployed", pem,
                                     "" if i == 0 else "remove from trust.previousRoots after the overlap"))
            except CaError as exc:
                raise CaError(f"--trust-bundle, certificate {i + 1}: {exc}") from None
    if trust_bundle_pem:  # the roots given by hand stand for the state's
        covered.add("root")
        found.rows = [r for r in found.rows if r.layer != "root"]
    rows += found.rows
    deployed_anchors = {r.id.split()[0] for r in found.rows if r.layer == "linkerd-anchor"}
    rows += [r for r in config_rows(platform, now) if r.layer not in covered
             # a generation configured but not deployed yet keeps its row
             or (r.layer == "linkerd-anchor" and r.id not in deployed_anchors)]
    queried = False
    if platform.config.subsystems.spire and admin is not None:
        state = admin.state()
        if state.trust_domain and state.trust_domain != platform.config.trust_domain:
            raise CaError(f"the SPIRE server's trust domain is {state.trust_domain!r}, not stack "
                          f"{platform.stack}'s {platform.config.trust_domain!r}")
        rows += spire_rows(state, spire_key_custody(platform.config), replicas=platform.config.spire.replicas)
        queried = True
    elif platform.config.subsystems.spire:
        rows += [StatusRow(layer, "(not queried)", spire_key_custody(platform.config),
                           "pass --spire-server-socket to read them") for layer in ("spire-x509", "spire-jwt")]
    if fmt == "json":
        out.write(format_json(rows, now, stack=platform.stack, trust_domain=platform.config.trust_domain,
                              spire_queried=queried, notes=found.notes))
    else:
        out.write(format_table(rows, now))
        out.writelines(f"note: {n}\n" for n in found.notes)
    return 0


# --------------------------------------------------------------------------- rotate


def journal_path(state_dir: Path, stack: str, kind: Kind, socket: str = "") -> Path:
    """Per server socket: with several replicas each server has its own authorities and journal."""
    return state_dir / f"{stack}-{kind}{_socket_key(socket)}.json"


def _socket_key(socket: str) -> str:
    import hashlib

    return f"-{hashlib.sha256(socket.encode()).hexdigest()[:10]}" if socket else ""


def _replicas_notice(platform: Platform, command: str, say: Callable[[str], None]) -> None:
    n = platform.config.spire.replicas
    if n > 1:
        say(f"note: stack {platform.stack} runs {n} SPIRE server replicas, each with its own X.509 CA and JWT key "
            f"(only the bundle is shared): this acts on the one server behind this socket; run `passport ca "
            f"{command}` against each server pod's socket (--spire-server-socket)")


def default_propagation(state: ServerState) -> timedelta:
    """Until every consumer has the bundle carrying both: the bundle's refresh hint (bundle
    endpoint consumers poll at it) plus a kubelet's ConfigMap refresh (the k8sbundle copy)."""
    return timedelta(seconds=state.refresh_hint_s) + CONFIGMAP_SYNC


def rotate(platform: Platform, admin: SpireAdmin, kind: Kind, out: TextIO, *, state_dir: Path,
           dry_run: bool = False, propagation: timedelta | None = None, overlap: timedelta | None = None,
           wait_overlap: bool = False, clock: Clock = Clock()) -> int:
    """A planned rotation of SPIRE's ``kind`` authority; resumable through its journal."""
    _require_spire(platform)
    ttls = stack_ttls(platform)
    overlap = overlap if overlap is not None else (ttls.x509 if kind == "x509" else ttls.jwt)
    path = journal_path(state_dir, platform.stack, kind, admin.socket)
    journal = None
    if path.exists():
        try:
            journal = Journal.from_json(path.read_text())
        except (ValueError, KeyError, TypeError) as exc:
            raise CaError(f"{path}: not a rotation journal ({type(exc).__name__}: {exc}); delete it to start "
                          "the rotation over from the server's state") from None

    def say(text: str) -> None:
        out.write(text + "\n")
        out.flush()

    _replicas_notice(platform, "rotate", say)
    printed = False
    while True:
        state = admin.state()
        wait = propagation if propagation is not None else default_propagation(state)
        now = clock.now()
        plan = plan_rotation(kind, state, journal, now, propagation=wait, overlap=overlap)
        journal = plan.journal
        if not printed:
            resumed = path.exists() and journal.new_id
            say(f"rotation of SPIRE's {kind} authority in stack {platform.stack}"
                f"{' (resumed from ' + str(path) + ')' if resumed else ''}:")
            for step in plan.steps:
                say("  " + step.line(now))
            printed = True
        if dry_run:
            say("dry run: nothing was changed")
            return 0
        todo = plan.next
        if todo is None:
            say(f"done: {journal.new_id} is active; {journal.old_id} signed nothing that is still valid and "
                "SPIRE drops it from the bundle when it expires")
            path.unlink(missing_ok=True)
            return 0
        step = todo
        if step.name == "prepare":
            journal.new_id = admin.prepare(kind)
            journal.prepared_at = clock.now().timestamp()
            say(f"prepared   {journal.new_id} (in the bundle beside {journal.old_id}; signs nothing yet)")
        elif step.name == "propagate":
            new = state.find(journal.new_id)
            # under an UpstreamAuthority the bundle holds the upstream root, not SPIRE's X.509 CAs
            in_bundle_expected = kind == "jwt" or not state.upstream
            if new is None or (in_bundle_expected and not new.in_bundle):
                raise CaError(f"the prepared authority {journal.new_id} is not in the server's bundle")
            left = max(0.0, ((step.until or now) - now).total_seconds())
            say(f"waiting    {human_duration(max(1, int(left)))} for the bundle carrying both to reach every "
                "agent and consumer")
            clock.sleep(left)
        elif step.name == "activate":
            admin.local("activate", kind, journal.new_id)
            journal.activated_at = clock.now().timestamp()
            say(f"activated  {journal.new_id}: every new SVID is signed by it; {journal.old_id} is old")
        elif step.name == "overlap":
            left = max(0.0, ((step.until or now) - now).total_seconds())
            if not wait_overlap:
                _save(path, journal)
                say(f"overlap    {journal.old_id} stays trusted until {step.until:%Y-%m-%dT%H:%M:%SZ} "
                    f"({human_duration(max(1, int(left)))}): run `passport ca rotate --stack {platform.stack} "
                    f"--authority {kind}` again after that to finish (or pass --wait)")
                return 0
            say(f"waiting    {human_duration(max(1, int(left)))} until every SVID {journal.old_id} signed has "
                "expired")
            clock.sleep(left)
        _save(path, journal)


def _save(path: Path, journal: Journal) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(journal.to_json())


# --------------------------------------------------------------------------- compromise


def compromise(platform: Platform, admin: SpireAdmin, authority_id: str, out: TextIO, *, yes: bool = False,
               propagation: timedelta = timedelta(seconds=30), resign_timeout: timedelta = timedelta(minutes=5),
               jwt_sync_wait: timedelta = timedelta(seconds=30), state_dir: Path = Path(".pulumi-local/ca"),
               clock: Clock = Clock()) -> int:
    """The incident path for one authority: (rotate away,) taint, wait (bounded), revoke.

    The agents' X.509-SVID serials from before the taint are kept in ``state_dir`` until the
    revocation, so a run interrupted after the taint resumes at the wait with them."""
    _require_spire(platform)
    ttls = stack_ttls(platform)

    def say(text: str) -> None:
        out.write(text + "\n")
        out.flush()

    state = admin.state()
    if state.trust_domain and state.trust_domain != platform.config.trust_domain:
        raise CaError(f"the SPIRE server's trust domain is {state.trust_domain!r}, not stack "
                      f"{platform.stack}'s {platform.config.trust_domain!r}")
    _replicas_notice(platform, "compromise", say)
    plan = plan_compromise(state, authority_id, x509_ttl=ttls.x509, jwt_ttl=ttls.jwt, now=clock.now(),
                           replicas=platform.config.spire.replicas)
    say(f"compromise of {plan.kind} authority {plan.authority_id} in stack {platform.stack}:")
    for step in plan.steps:
        say("  " + step.line(clock.now()))
    say("cannot be recalled:")
    for line in plan.unrecallable:
        say(f"  - {line}")
    if not yes:
        say("dry run: nothing was changed; run again with --yes to taint and revoke")
        return 0
    if plan.kind == "upstream":
        _upstream_compromise(admin, state, plan, say, clock, resign_timeout,
                             snapshot_path(state_dir, platform.stack, plan.authority_id,
                                                       admin.socket))
        return 0
    kind: Kind = plan.kind
    target = plan.authority_id
    if plan.rotate_first:
        prepared = state.slot(kind, "prepared")
        new_id = prepared.id if prepared is not None else admin.prepare(kind)
        say(f"prepared   {new_id} (replacement)")
        say(f"waiting    {format_duration(max(1, int(propagation.total_seconds())))} for agents to fetch the bundle "
            "carrying it")
        clock.sleep(propagation.total_seconds())
        admin.local("activate", kind, new_id)
        say(f"activated  {new_id}; {target} is old")
        state = admin.state()
    found = state.find(target)
    assert found is not None
    snapshot = snapshot_path(state_dir, platform.stack, target, admin.socket)
    serials: dict[str, str] | None
    if not found.tainted:
        serials = admin.agent_serials() if kind == "x509" else {}
        _save_snapshot(snapshot, serials)
        admin.local("taint", kind, target)
        say(f"tainted    {target}: agents and workloads re-sign under the active authority at their next sync")
    else:
        serials = _load_snapshot(snapshot, say)
    tainted_at = clock.now()
    if kind == "x509":
        _wait_resigned(admin, serials, say, clock, resign_timeout)
    else:
        say(f"waiting    {format_duration(max(1, int(jwt_sync_wait.total_seconds())))} for every agent to sync and "
            "drop JWT-SVIDs signed by the tainted key")
        clock.sleep(jwt_sync_wait.total_seconds())
    admin.local("revoke", kind, target)
    after = admin.state().find(target)
    if after is not None and after.in_bundle:
        raise CaError(f"revoked {target}, but the server's bundle still holds it")
    say(f"revoked    {target}: no longer in the bundle ({(clock.now() - tainted_at).total_seconds():.1f}s after "
        "the taint); peers that fetch the new bundle refuse what it signed")
    snapshot.unlink(missing_ok=True)
    for line in plan.unrecallable:
        say(f"remember   {line}")
    return 0


def snapshot_path(state_dir: Path, stack: str, authority_id: str, socket: str = "") -> Path:
    """The agents' SVID serials taken just before tainting ``authority_id`` through ``socket``."""
    return state_dir / f"{stack}-compromise-{authority_id.strip().lower()}{_socket_key(socket)}.json"


def _save_snapshot(path: Path, serials: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"agent_serials": serials}, sort_keys=True) + "\n")


def _load_snapshot(path: Path, say: Callable[[str], None]) -> dict[str, str] | None:
    """The serials an earlier run saved before its taint; None when there are none to trust."""
    try:
        data = json.loads(path.read_text())
        serials = data["agent_serials"]
        if not isinstance(serials, dict):
            raise TypeError("agent_serials is not an object")
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        say(f"note       {path}: unreadable snapshot ({type(exc).__name__}); waiting the full timeout instead")
        return None
    say(f"resuming   the taint was set by an earlier run; its snapshot of {len(serials)} agent SVID(s): {path}")
    return {str(k): str(v) for k, v in serials.items()}


def _wait_resigned(admin: SpireAdmin, before: dict[str, str] | None, say: Callable[[str], None], clock: Clock,
                   timeout: timedelta) -> None:
    """Until every agent attested before the taint holds a new X.509-SVID, or ``timeout``.

    ``before`` None: the taint was set earlier and nothing says which SVIDs predate it, so the
    whole (bounded) timeout is waited."""
    if before is None:
        say(f"waiting    {format_duration(max(1, int(timeout.total_seconds())))} (the whole --timeout): the "
            "authority was already tainted and no snapshot of the agents' SVIDs from before it was found")
        clock.sleep(timeout.total_seconds())
        return
    if not before:
        say("resigned   no agent SVIDs to wait for (no agent was attested at the taint)")
        return
    deadline = clock.now() + timeout
    waiting = sorted(before)
    while True:
        now_serials = admin.agent_serials()
        waiting = [a for a in waiting if a in now_serials and now_serials[a] == before[a]]
        if not waiting:
            say(f"resigned   all {len(before)} agent(s) hold an SVID signed after the taint")
            return
        if clock.now() >= deadline:
            say(f"WARNING    {len(waiting)} agent(s) still hold an SVID from before the taint after "
                f"{format_duration(int(timeout.total_seconds()))}: {', '.join(waiting)}; revoking anyway "
                "(they fail their next handshake and re-attest)")
            return
        clock.sleep(2.0)


def _upstream_compromise(admin: SpireAdmin, state: ServerState, plan: CompromisePlan, say: Callable[[str], None],
                         clock: Clock, timeout: timedelta, snapshot: Path) -> None:
    root = state.find(plan.authority_id)  # an upstream root signing SPIRE's CA directly is in the bundle
    serials: dict[str, str] | None
    if root is not None and root.tainted:
        serials = _load_snapshot(snapshot, say)
    else:  # an intermediate is not in the bundle: its taint shows only as the server's refusal to repeat it
        prior = snapshot.read_text() if snapshot.is_file() else None
        serials = admin.agent_serials()
        _save_snapshot(snapshot, serials)
        try:
            admin.upstream("taint", plan.authority_id)
            say(f"tainted    upstream {plan.authority_id}")
        except CaError as exc:
            if "already tainted" not in str(exc).lower():
                raise
            say(f"tainted    upstream {plan.authority_id} (already, by an earlier run)")
            if prior is None:
                snapshot.unlink()
            else:
                snapshot.write_text(prior)
            serials = _load_snapshot(snapshot, say)
    _wait_resigned(admin, serials, say, clock, timeout)
    admin.upstream("revoke", plan.authority_id)
    snapshot.unlink(missing_ok=True)
    say(f"revoked    upstream {plan.authority_id}: removed from the bundle; now revoke it where it lives "
        "(Vault PKI, AWS Private CA, the offline root's CRL) and drop it from trust.previousRoots")
