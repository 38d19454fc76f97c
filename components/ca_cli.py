"""The ``passport ca`` command group: status, rotate, compromise, drill (docs/runbook.md)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from components.durations import parse_duration

EXIT_OK, EXIT_INPUT = 0, 2

UPSTREAM_ROTATION = """\
rotation of the trust domain's upstream CA ({upstream}) in stack {stack} (by hand; nothing here changes it):
  1. issue the new root/intermediate where the key lives ({where})
  2. put the old root's PEM in trust.previousRoots, `pulumi up`: Vault cert auth, Roles Anywhere and
     SPIRE's upstream bundle now trust both
  3. `passport ca rotate --stack {stack} --authority x509`: SPIRE's next CA is signed by the new upstream
  4. after the overlap (the longest X.509-SVID TTL, {ttl}): remove the old root from trust.previousRoots,
     `pulumi up` (Vault cert auth and Roles Anywhere stop trusting it; the upstream no longer offers it)
  5. at once, before SPIRE prepares its next CA (`passport ca status`): `passport ca compromise --stack {stack}
     --authority <old root subject key ID> --yes` (spire-server upstreamauthority taint, then
     revoke -subjectKeyID): SPIRE keeps an upstream root in its bundle until it expires or is revoked, so
     until then agents, Envoy and every workload still trust it. On a compromise, do 4 and 5 without the wait.
"""

LINKERD_ROTATION = """\
rotation of Linkerd's trust anchor in stack {stack} (the two-anchor procedure, docs/mesh.md):
  1. add a generation to mesh.trustAnchors (now {anchors}), `pulumi up`: the bundle carries both
  2. restart the meshed workloads so every proxy holds the two-anchor bundle
  3. set mesh.issuerAnchor to the new generation, `pulumi up`: the issuer is re-signed under it
  4. once every proxy certificate under the old issuer has expired (24h in Linkerd), remove the old generation
"""


def _duration(text: str) -> timedelta:
    try:
        return timedelta(seconds=parse_duration(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_ca_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ca = sub.add_parser("ca", help="CA lifecycle: status, planned rotation, compromise response, quarterly drill")
    group = ca.add_subparsers(dest="ca_command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--stack", required=True)
        p.add_argument("--spire-server-socket", default=None,
                       help="the SPIRE server's admin API socket "
                       "(in the server pod: /tmp/spire-server/private/api.sock)")
        p.add_argument("--spire-server-bin", default=None, help="spire-server binary (default: PATH, tools cache)")
        p.add_argument("--paths", nargs="*", default=None, help="manifest paths (default: the stack's agentsDir)")

    st = group.add_parser("status", help="every authority in the trust chain, where its key lives, what happens next")
    common(st)
    st.add_argument("--format", choices=["table", "json"], default="table")
    st.add_argument("--trust-bundle", default=None, metavar="FILE",
                    help="the deployed roots (`pulumi stack output trustBundlePem`), for their dates")
    st.add_argument("--state", default=None, metavar="FILE",
                    help="the stack's exported state (`pulumi stack export`) instead of exporting it here")
    st.add_argument("--no-deployed", action="store_true",
                    help="do not read the deployed certificates (Pulumi state, the cluster's cert-manager Secrets)")
    st.add_argument("--kubectl-bin", default=None, help="kubectl binary (default: PATH, tools cache)")
    st.add_argument("--root", default=".", help="project directory (default: .)")
    st.set_defaults(func=cmd_ca)

    ro = group.add_parser("rotate", help="planned rotation with overlap: prepare, propagate, activate, keep the old "
                          "one until its SVIDs expire (resumable)")
    common(ro)
    ro.add_argument("--authority", choices=["x509", "jwt", "upstream", "linkerd"], default="x509")
    ro.add_argument("--dry-run", action="store_true", help="print the plan and what is done; change nothing")
    ro.add_argument("--propagation", type=_duration, default=None,
                    help="wait between prepare and activate (default: the bundle's refresh hint + 60s)")
    ro.add_argument("--overlap", type=_duration, default=None,
                    help="keep the old authority this long after activation (default: the longest SVID TTL)")
    ro.add_argument("--wait", action="store_true", help="wait out the overlap instead of stopping (resume later)")
    ro.add_argument("--state-dir", default=".pulumi-local/ca", help="where the rotation journal is kept")
    ro.set_defaults(func=cmd_ca)

    co = group.add_parser("compromise", help="incident: taint the authority, wait (bounded), revoke it "
                          "(dry run without --yes)")
    common(co)
    co.add_argument("--authority", required=True, metavar="ID",
                    help="authority ID from `passport ca status` (X.509 subject key ID, JWT key ID, or an upstream's "
                    "subject key ID)")
    co.add_argument("--yes", action="store_true", help="really taint and revoke (default: dry run)")
    co.add_argument("--propagation", type=_duration, default=_duration("30s"),
                    help="when the active authority is compromised: wait this long before activating its "
                    "replacement (default 30s)")
    co.add_argument("--timeout", type=_duration, default=_duration("5m"),
                    help="bound on waiting for agents to re-sign after the taint (default 5m)")
    co.add_argument("--state-dir", default=".pulumi-local/ca",
                    help="where the agents' SVID serials from before the taint are kept until the revocation")
    co.set_defaults(func=cmd_ca)

    dr = group.add_parser("drill", help="quarterly drill: rotate and compromise on a throwaway local SPIRE server "
                          "started from the stack's rendered config; prints a pass/fail report")
    dr.add_argument("--stack", required=True)
    dr.add_argument("--report", default=None, metavar="FILE", help="also write the report as JSON to FILE")
    dr.add_argument("--spire-server-bin", default=None, help="spire-server binary (default: PATH, tools cache)")
    dr.add_argument("--spire-agent-bin", default=None,
                    help="spire-agent binary (default: beside spire-server, PATH, tools cache); without one the "
                    "drill does not exercise a workload re-signing and says so")
    dr.add_argument("--paths", nargs="*", default=None, help="manifest paths (default: the stack's agentsDir)")
    dr.set_defaults(func=cmd_ca)


def cmd_ca(args: argparse.Namespace) -> int:
    from components.ca_lifecycle import CaError, stack_ttls
    from components.platform_model import load_platform

    platform = load_platform(args.stack, args.paths)
    try:
        if args.ca_command == "drill":
            from components.ca_drill import drill

            server_bin = _binary(args.spire_server_bin)
            return drill(platform, sys.stdout, binary=server_bin, agent_binary=_agent(args.spire_agent_bin, server_bin),
                         report=Path(args.report) if args.report else None)
        if args.ca_command == "rotate" and args.authority in ("upstream", "linkerd"):
            cfg = platform.config
            if args.authority == "linkerd":
                anchors = ", ".join(cfg.mesh.trust_anchors)
                sys.stdout.write(LINKERD_ROTATION.format(stack=platform.stack, anchors=anchors))
                return EXIT_OK
            if cfg.trust.upstream == "spire":
                raise CaError(f"stack {platform.stack} has no upstream CA (trust.upstream: spire): rotate SPIRE's "
                              "own root with --authority x509")
            where = {"tls": "pulumi-tls: taint the root in state, `pulumi up`", "vault-pki": "Vault PKI",
                     "aws-pca": "AWS Private CA"}[cfg.trust.upstream]
            ttl = int(stack_ttls(platform).x509.total_seconds()) // 60
            sys.stdout.write(UPSTREAM_ROTATION.format(upstream=cfg.trust.upstream, stack=platform.stack, where=where,
                                                      ttl=f"{ttl}m"))
            return EXIT_OK
        from components.ca_runner import SpireAdmin, compromise, rotate, status

        admin = None
        if args.spire_server_socket:
            admin = SpireAdmin(_binary(args.spire_server_bin), args.spire_server_socket)
        if args.ca_command == "status":
            try:
                bundle = Path(args.trust_bundle).read_text() if args.trust_bundle else None
            except (OSError, ValueError) as exc:
                raise CaError(f"--trust-bundle {args.trust_bundle}: cannot be read ({exc})") from None
            return status(platform, admin, sys.stdout, fmt=args.format, trust_bundle_pem=bundle,
                          deployed=None if args.no_deployed else _deployed_reader(platform, args))
        if admin is None:
            raise CaError(f"`passport ca {args.ca_command}` needs --spire-server-socket (the SPIRE server's admin "
                          "socket; in the server pod: /tmp/spire-server/private/api.sock)")
        if args.ca_command == "rotate":
            return rotate(platform, admin, args.authority, sys.stdout, state_dir=Path(args.state_dir),
                          dry_run=args.dry_run, propagation=args.propagation, overlap=args.overlap,
                          wait_overlap=args.wait)
        return compromise(platform, admin, args.authority, sys.stdout, yes=args.yes, propagation=args.propagation,
                          resign_timeout=args.timeout, state_dir=Path(args.state_dir))
    except CaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INPUT


def _deployed_reader(platform: Any, args: argparse.Namespace) -> Callable[[datetime], Any]:
    """Reads the deployed certificates (the stack's state, its cluster) for `ca status`."""
    import json

    from components.ca_lifecycle import CaError
    from components.ca_sources import read_deployed
    from components.revoke import find_kubectl

    state = None
    if args.state:
        try:
            state = json.loads(Path(args.state).read_text())
        except (OSError, ValueError) as exc:
            raise CaError(f"--state {args.state}: not an exported stack state ({exc})") from None
        if not isinstance(state, dict):
            raise CaError(f"--state {args.state}: not an exported stack state (a JSON {type(state).__name__}, "
                          "not the object `pulumi stack export` writes)")
    root = Path(args.root).resolve()
    kubectl = find_kubectl(args.kubectl_bin)
    return lambda now: read_deployed(platform, root, now, state=state, kubectl=kubectl)


def _binary(explicit: str | None) -> str:
    from components.ca_lifecycle import CaError
    from components.revoke import find_spire_server

    found = find_spire_server(explicit)
    if found is None:
        raise CaError("spire-server not found: pass --spire-server-bin or put it on PATH")
    return found


def _agent(explicit: str | None, server_bin: str) -> str | None:
    """spire-agent: --spire-agent-bin, beside spire-server, PATH, or the bootstrap-tools cache."""
    import os
    import shutil

    if explicit:
        return explicit
    beside = Path(server_bin).with_name("spire-agent")
    if beside.is_file():
        return str(beside)
    cached = Path(os.path.expanduser("~/.cache/agent-passport/tools/bin/spire-agent"))
    return shutil.which("spire-agent") or (str(cached) if cached.is_file() else None)
