"""``passport up | preview | refresh | destroy``: the Pulumi program on the real engine.

The program of ``__main__.py`` (:func:`components.program.main`) runs as an Automation API
*inline* program: the Pulumi CLI talks to this Python process over gRPC, so no Python language
host is needed, while the engine, the providers and the state are the real ones.

* Config comes from ``stacks/Pulumi.<env>.yaml`` (``Pulumi.yaml`` sets ``stackConfigDir``).
* The backend is ``PULUMI_BACKEND_URL`` when set; otherwise non-strict stacks use a file backend
  under ``.pulumi-local/state`` with a local passphrase, and strict stacks are refused (their
  state belongs in the team's backend, not on a laptop).
* The policy pack (``policy-packs/no-static-credentials``) is always attached, mandatory; its
  ``analyzer`` launcher is run by the engine directly (no language host either).
* Before anything starts, :func:`preflight` names every missing piece (CLI, provider plugins,
  kubeconfig) with how to get it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal, TextIO

from components.config import StackConfig, load_stack_config, stack_file

Action = Literal["up", "preview", "refresh", "destroy"]
Checkpoints = Literal["always", "never", "auto"]

# Resource families a re-run adopts after a crash left them out of the state (docs/sharding.md):
# kubernetes objects under server-side apply (`passport recover` takes them over; the crash e2e
# test kills the engine mid-update). Not vault (policies and roles are PUTs, but a mount, an auth
# backend or an audit device answers "path is already in use"), not tls (a re-run makes new keys,
# so a new CA), not aws (IAM roles answer EntityAlreadyExists, buckets BucketAlreadyOwnedByYou,
# and a second Private CA would be created and billed).
RECOVERABLE_PROVIDERS = frozenset({"kubernetes"})

PROJECT = "agent-passport"
LOCAL_DIR = ".pulumi-local"
LOCAL_PASSPHRASE = "agent-passport-local-dev"
POLICY_PACK = Path("policy-packs") / "no-static-credentials"
POLICY_LAUNCHER = "analyzer"
TOOLS_BIN = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "agent-passport" / "tools" / "bin"

# Provider plugin name -> its PyPI SDK distribution. The engine asks for the plugin version the SDK
# was generated for, so the versions come from the installed SDKs.
_SDKS = {"kubernetes": "pulumi-kubernetes", "tls": "pulumi-tls", "vault": "pulumi-vault", "aws": "pulumi-aws"}


class EngineUnavailable(Exception):
    """Something the engine needs is missing; the message lists every piece and how to get it."""


# --------------------------------------------------------------------------- what a stack needs


def required_providers(cfg: StackConfig) -> list[str]:
    """Provider plugins the program registers resources with for this stack, in a stable order."""
    on = cfg.subsystems
    needed = {"kubernetes"}
    custody = cfg.mesh.anchor_custody or _default_custody(cfg)
    if cfg.trust.upstream == "tls" or (on.mesh and custody != "cert-manager"):
        # pulumi-tls: the tls upstream, and Linkerd's issuer key unless cert-manager issues it
        needed.add("tls")
    if on.vault or cfg.trust.upstream == "vault-pki" or (on.mesh and custody == "vault-pki"):
        needed.add("vault")
    if on.aws or cfg.trust.upstream == "aws-pca" or (on.mesh and custody == "aws-pca"):
        needed.add("aws")
    return [p for p in _SDKS if p in needed]


def _default_custody(cfg: StackConfig) -> str:
    from components.render.mesh import anchor_custody

    return anchor_custody(cfg)


def plugin_version(provider: str) -> str:
    return metadata.version(_SDKS[provider])


def find_pulumi() -> str | None:
    """The Pulumi CLI: the bootstrap cache first, then PATH."""
    cached = TOOLS_BIN / "pulumi"
    if cached.is_file() and os.access(cached, os.X_OK):
        return str(cached)
    return shutil.which("pulumi")


def installed_plugins(pulumi: str, env: Mapping[str, str]) -> set[tuple[str, str]]:
    """``(name, version)`` of every resource plugin the CLI has installed."""
    out = subprocess.run([pulumi, "plugin", "ls", "--json"], capture_output=True, text=True, env=dict(env),
                         check=False, timeout=60)
    if out.returncode != 0:
        return set()
    import json

    found: set[tuple[str, str]] = set()
    for p in json.loads(out.stdout or "[]") or []:
        if p.get("kind") == "resource":
            found.add((str(p.get("name")), str(p.get("version", "")).lstrip("v")))
    return found


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class EngineSettings:
    """Where the engine runs, keeps state and finds its pieces for one stack."""

    root: Path
    stack: str
    config: StackConfig
    backend_url: str
    local_backend: bool
    env: dict[str, str] = field(repr=False)

    @property
    def policy_launcher(self) -> Path:
        return self.root / POLICY_PACK / POLICY_LAUNCHER


def settings_for(stack: str, root: Path, environ: Mapping[str, str] | None = None) -> EngineSettings:
    """Resolve the backend, secrets passphrase and process environment for ``stack``."""
    environ = dict(os.environ if environ is None else environ)
    root = root.resolve()
    cfg = load_stack_config(stack, root)
    backend = environ.get("PULUMI_BACKEND_URL", "")
    local = not backend
    if local:
        if cfg.is_strict:
            raise EngineUnavailable(
                f"{stack_file(stack)}: stack {stack!r} is strict, so its state belongs in your team's backend: "
                "set PULUMI_BACKEND_URL (e.g. s3://bucket/prefix or https://api.pulumi.com) and run again. "
                f"Only non-strict stacks fall back to the local file backend under {LOCAL_DIR}/state."
            )
        state = root / LOCAL_DIR / "state"
        state.mkdir(parents=True, exist_ok=True)
        backend = state.as_uri()
        # Local only: a passphrase you may override; real stacks use their own secrets provider.
        environ.setdefault("PULUMI_CONFIG_PASSPHRASE", LOCAL_PASSPHRASE)
    tmp = root / LOCAL_DIR / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    pulumi = find_pulumi()
    path = environ.get("PATH", "")
    if pulumi is not None:
        path = f"{Path(pulumi).parent}{os.pathsep}{path}"
    environ.update({
        "PULUMI_BACKEND_URL": backend,
        "PATH": path,
        "TMPDIR": str(tmp),
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        "PULUMI_DIY_BACKEND_NO_LEGACY_WARNING": "true",
        # Use the plugins installed for this project; never download one behind the user's back.
        "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
        # The policy pack's launcher runs the pack with this interpreter (the project's venv).
        "PASSPORT_PYTHON": sys.executable,
    })
    return EngineSettings(root=root, stack=stack, config=cfg, backend_url=backend, local_backend=local, env=environ)


def preflight(settings: EngineSettings) -> list[str]:
    """Every missing piece, each with how to get it; empty when the engine can run."""
    missing: list[str] = []
    pulumi = find_pulumi()
    if pulumi is None:
        missing.append("the Pulumi CLI (`pulumi`): scripts/bootstrap-tools --only pulumi, or https://www.pulumi.com/docs/install/")
    else:
        have = installed_plugins(pulumi, settings.env)
        for provider in required_providers(settings.config):
            version = plugin_version(provider)
            if (provider, version) not in have:
                how = ("scripts/bootstrap-tools --only pulumi-resource-kubernetes" if provider == "kubernetes"
                       else f"pulumi plugin install resource {provider} {version}")
                missing.append(f"the Pulumi {provider} provider plugin v{version}: {how}")
    launcher = settings.policy_launcher
    if not os.access(launcher, os.X_OK):
        missing.append(f"the policy pack launcher {launcher.relative_to(settings.root)} (executable): "
                       "restore it from git")
    kube = settings.config.kubernetes
    if kube.mode == "cluster" and kube.kubeconfig and not (settings.root / kube.kubeconfig).is_file():
        missing.append(f"the kubeconfig {kube.kubeconfig} named by {stack_file(settings.stack)} "
                       "(kubernetes.kubeconfig): for the local stack, scripts/local-cluster start")
    return missing


def checkpoint_policy(cfg: StackConfig, mode: Checkpoints) -> tuple[bool, str]:
    """Whether to skip the per-step state checkpoints (PULUMI_SKIP_CHECKPOINTS), and why.

    A file/S3 backend rewrites the whole state after every step, so an update's cost grows with
    the square of the stack's size (docs/sharding.md has the measurements). Skipping is safe only
    where a crash mid-update is repaired by running `up` again.
    """
    if mode == "always":
        return False, "checkpointing after every step (--checkpoints=always)"
    if mode == "never":
        return True, "not checkpointing (--checkpoints=never): a crash mid-update leaves resources out of the state"
    unsafe = [p for p in required_providers(cfg) if p not in RECOVERABLE_PROVIDERS]
    if unsafe:
        return False, (f"checkpointing after every step: {', '.join(unsafe)} resources left out of the state by a "
                       "crash would not be adopted by the next `up`")
    return True, ("not checkpointing each step: every resource here is adopted after a crash "
                  "(kubernetes server-side apply; `passport recover`); the state is backed up first")


# The fit of benchmarks/engine.py on a 2-core machine (docs/benchmarks.md, section 6): `up` CPU is
# about 2.8e-4 s x resources^2 with a checkpoint per step and 28 ms per resource without.
CHECKPOINTED_S_PER_RESOURCE2 = 2.8e-4
UNCHECKPOINTED_S_PER_RESOURCE = 0.028
LONG_RUN_S = 120


def expected_seconds(resources: int, skip_checkpoints: bool) -> float:
    """What an `up` of ``resources`` is expected to cost, from the measured fit."""
    if skip_checkpoints:
        return UNCHECKPOINTED_S_PER_RESOURCE * resources
    return CHECKPOINTED_S_PER_RESOURCE2 * resources * resources


def backup_state(stack_obj: Any, root: Path, stack: str) -> Path:
    """The stack's current state, exported before an update that skips checkpoints."""
    backups = root / LOCAL_DIR / "backups"
    backups.mkdir(parents=True, exist_ok=True)
    path = backups / f"{stack}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    deployment = stack_obj.export_stack()
    import json

    path.write_text(json.dumps({"version": deployment.version, "deployment": deployment.deployment}), encoding="utf-8")
    path.chmod(0o600)
    return path


# --------------------------------------------------------------------------- running

IGNORED_OPS = frozenset({"same", "read", "create-replacement", "delete-replaced", "discard-replaced"})


@dataclass
class Tally:
    """What the engine did (or would do), by operation and resource type; policy violations."""

    ops: Counter[tuple[str, str]] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)

    def on_event(self, preview: bool) -> Callable[[Any], None]:
        def handle(event: Any) -> None:
            pre = getattr(event, "resource_pre_event", None)
            done = getattr(event, "res_outputs_event", None)
            step = (pre if preview else done)
            if step is not None and step.metadata is not None:
                op = str(getattr(step.metadata.op, "value", step.metadata.op))
                # a replacement is one "replace" step; its create/delete halves are not counted again
                if op not in IGNORED_OPS and step.metadata.type != "pulumi:pulumi:Stack":
                    self.ops[(op, step.metadata.type)] += 1
            pol = getattr(event, "policy_event", None)
            if pol is not None and pol.enforcement_level in ("mandatory", "remediate"):
                name = pol.resource_urn.rsplit("::", 1)[-1] if pol.resource_urn else "stack"
                self.violations.append(f"[{pol.enforcement_level}] {pol.policy_name} ({name}): {pol.message.strip()}")

        return handle

    def changes(self) -> int:
        return sum(self.ops.values())

    def summary(self) -> str:
        if not self.ops:
            return "no changes"
        by_op: dict[str, Counter[str]] = {}
        for (op, typ), n in self.ops.items():
            by_op.setdefault(op, Counter())[typ] += n
        lines = []
        for op in sorted(by_op):
            total = sum(by_op[op].values())
            lines.append(f"{op}: {total}")
            lines += [f"    {n:5d}  {typ}" for typ, n in sorted(by_op[op].items())]
        return "\n".join(lines)


def _workspace(settings: EngineSettings, program: Callable[[], None] | None = None) -> Any:
    from pulumi import automation as auto

    from components.program import main as program_main

    root = settings.root

    def default_program() -> None:
        program_main(root)

    program = program or default_program

    pulumi = find_pulumi()
    assert pulumi is not None  # preflight
    # PulumiCommand(root) runs <root>/bin/pulumi: the CLI preflight found, not whatever is on PATH.
    command = auto.PulumiCommand(root=str(Path(pulumi).parent.parent))
    opts = auto.LocalWorkspaceOptions(work_dir=str(root), env_vars=settings.env, pulumi_command=command)
    # The Automation API passes env_vars to the CLI; the Python side (this process) needs the
    # same backend and passphrase when it reads stack outputs.
    os.environ.update({k: v for k, v in settings.env.items() if k != "PATH"})
    return auto.create_or_select_stack(stack_name=settings.stack, project_name=PROJECT, program=program, opts=opts)


def _ready(command: str, stack: str, root: Path, environ: Mapping[str, str] | None,
           err: TextIO) -> EngineSettings | int:
    """The engine's settings for ``stack``, or the exit code after naming what is missing
    (2: the stack's state has no backend here; 3: a piece of the engine is missing)."""
    try:
        settings = settings_for(stack, root, environ)
    except EngineUnavailable as exc:
        print(str(exc), file=err)
        return 2
    missing = preflight(settings)
    if missing:
        print(f"cannot run `passport {command}` of stack {stack!r}; missing:", file=err)
        for m in missing:
            print(f"  - {m}", file=err)
        return 3
    return settings


def run(action: Action, stack: str, *, root: Path, yes: bool = False, diff: bool = False,
        out: TextIO | None = None, err: TextIO | None = None, parallel: int | None = None,
        environ: Mapping[str, str] | None = None, program: Callable[[], None] | None = None,
        checkpoints: Checkpoints = "auto") -> int:
    """Run one engine action (``program``: the project's by default; tests pass a variant).

    Exit codes: 0 success, 1 failure or a policy violation, 2 bad input, 3 a piece of the engine
    is missing (each named).
    """
    from pulumi import automation as auto

    from components.errors import PassportError
    from components.platform_model import load_platform

    out, err = out or sys.stdout, err or sys.stderr
    os.chdir(root)  # stack files, agentsDir and renderDir are relative to the project
    settings = _ready(action, stack, root, environ, err)
    if isinstance(settings, int):
        return settings
    try:
        # Every user error before the engine starts (every rule of every subsystem, at once):
        # nothing is half-deployed.
        from components.progress import activity
        from components.render.artifacts import render_all

        with activity(f"checking and rendering stack {stack} before the engine starts"):
            platform = load_platform(stack)
            artifacts = render_all(platform)
    except PassportError as exc:
        print(exc.report(), file=err)
        return 2
    if action in ("up", "destroy") and not yes:
        print(f"`passport {action}` changes stack {stack!r}: run `passport preview --stack {stack}` to see what, "
              f"then again with --yes", file=err)
        return 2
    where = "local file backend " + settings.backend_url if settings.local_backend else settings.backend_url
    print(f"[passport] {action} stack {stack} ({len(platform.active_agents)} agents) on {where}", file=out)
    skip, why = checkpoint_policy(settings.config, checkpoints)
    if action in ("up", "destroy"):
        print(f"[passport] {why}", file=out)
        if skip:
            settings.env["PULUMI_SKIP_CHECKPOINTS"] = "true"
        objects = sum(1 for a in artifacts if a.path.startswith("kubernetes/"))
        expected = expected_seconds(objects, skip)
        if expected >= LONG_RUN_S:
            print(f"[passport] at least {objects} resources: expect about {expected / 60:.0f} min of engine CPU "
                  f"({'without' if skip else 'with'} per-step checkpoints; docs/sharding.md)", file=out)
    with activity(f"starting the Pulumi engine for stack {stack}"):
        stack_obj = _workspace(settings, program)
    if skip and action == "up":
        print(f"[passport] state backed up to {backup_state(stack_obj, settings.root, stack)}", file=out)
    tally = Tally()
    common: dict[str, Any] = {"on_output": lambda line: print(line, file=out, flush=True),
                              "color": "never"}
    if parallel is not None:
        common["parallel"] = parallel
    started = time.monotonic()
    try:
        if action == "preview":
            stack_obj.preview(diff=diff, policy_packs=[str(settings.policy_launcher)],
                              on_event=tally.on_event(preview=True), **common)
        elif action == "up":
            stack_obj.up(diff=diff, policy_packs=[str(settings.policy_launcher)],
                         on_event=tally.on_event(preview=False), **common)
        elif action == "refresh":
            stack_obj.refresh(on_event=tally.on_event(preview=False), **common)
        else:
            stack_obj.destroy(on_event=tally.on_event(preview=False), **common)
    except auto.CommandError as exc:
        print(f"\n[passport] {action} of stack {stack} FAILED after {time.monotonic() - started:.1f}s", file=err)
        if tally.violations:
            print("policy violations:", file=err)
            for v in tally.violations:
                print(f"  {v}", file=err)
        else:
            print(_last_lines(str(exc), 25), file=err)
        return 1
    print(f"\n[passport] {action} of stack {stack} finished in {time.monotonic() - started:.1f}s", file=out)
    print(tally.summary(), file=out)
    if tally.violations:
        print("policy violations:", file=err)
        for v in tally.violations:
            print(f"  {v}", file=err)
        return 1
    return 0


# --------------------------------------------------------------------------- recovering from a crash


@dataclass(frozen=True)
class StackLock:
    """One lock file of a file backend (what `pulumi up` writes while it runs)."""

    path: Path
    pid: int
    hostname: str

    @property
    def stale(self) -> bool:
        """Held by a process of this host that no longer exists."""
        import socket

        return self.hostname == socket.gethostname() and not Path(f"/proc/{self.pid}").exists()


def stack_locks(settings: EngineSettings) -> list[StackLock]:
    """The locks a file backend holds for this stack (none for other backends: they are not read)."""
    import json

    if not settings.backend_url.startswith("file://"):
        return []
    state = Path(settings.backend_url[len("file://"):])
    locks = []
    for f in sorted(state.glob(f".pulumi/locks/**/{settings.stack}/*.json")):
        try:
            content = json.loads(f.read_text(encoding="utf-8"))
            locks.append(StackLock(f, int(content.get("pid", 0)), str(content.get("hostname", ""))))
        except (OSError, ValueError):
            locks.append(StackLock(f, 0, ""))
    return locks


def recover(stack: str, *, root: Path, yes: bool = False, out: TextIO | None = None,
            err: TextIO | None = None, environ: Mapping[str, str] | None = None) -> int:
    """After an engine crash: drop the dead run's lock, reconcile the state with what exists
    (refresh, clearing pending creates), then `up` twice: adopting what the crash left out of the
    state where the provider can (kubernetes server-side apply with patchForce), then plainly."""
    from pulumi import automation as auto

    out, err = out or sys.stdout, err or sys.stderr
    os.chdir(root)
    settings = _ready("recover", stack, root, environ, err)
    if isinstance(settings, int):
        return settings
    locks = stack_locks(settings)
    live = [lk for lk in locks if not lk.stale]
    if live:
        for lk in live:
            print(f"stack {stack} is locked by pid {lk.pid} on {lk.hostname or '?'} ({lk.path}), which may still "
                  "be running: wait for it, or make sure it is gone and delete the lock file", file=err)
        return 1
    plan = [f"remove {len(locks)} stale lock(s) of a crashed run" if locks else "no stale lock",
            "refresh the state from what exists (clearing pending creates)",
            "up, adopting: create what is missing, take over what the crash left out of the state "
            "(server-side apply with patchForce)",
            "up: the stack exactly as a plain `up` leaves it"]
    print(f"[passport] recover stack {stack}:", file=out)
    for step in plan:
        print(f"  - {step}", file=out)
    if not yes:
        print("run again with --yes to do it", file=err)
        return 2
    from components.program import main as program_main

    stack_obj = _workspace(settings)
    say: dict[str, Any] = {"on_output": lambda line: print(line, file=out, flush=True), "color": "never"}
    try:
        if locks:
            stack_obj.cancel()
        stack_obj.refresh(clear_pending_creates=True, **say)
    except auto.CommandError as exc:
        print(f"[passport] recover of stack {stack} FAILED while refreshing:\n{_last_lines(str(exc), 25)}", file=err)
        return 1
    # Pass 1 adopts: an object the crashed run created may hold fields under that run's field
    # manager, which a plain server-side apply would refuse as a conflict (seen in the crash e2e).
    code = run("up", stack, root=root, yes=True, out=out, err=err, environ=environ,
               program=lambda: program_main(settings.root, adopt_orphans=True))
    if code != 0:
        return code
    # Pass 2 is a plain `up`: it drops pass 1's annotation, and the stack is as `up` leaves it.
    return run("up", stack, root=root, yes=True, out=out, err=err, environ=environ)


def _last_lines(text: str, n: int) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join(lines[-n:])
