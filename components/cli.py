"""``passport``: validate, explain, render, check and diff agent identities offline; deploy them with
the Pulumi engine (up, preview, refresh, destroy); revoke in an incident.

Exit codes: 0 ok, 1 the command found what it checks for (e.g. policy violations), 2 bad
input (every problem printed as ``file:line: field: reason``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from components.config import list_stacks, load_stack_config, stack_file
from components.durations import parse_duration
from components.errors import ManifestError, PassportError
from components.manifest.loader import ManifestSet, load_manifests
from components.platform_model import Platform, identity_bom, load_platform
from components.progress import activity

EXIT_OK, EXIT_FOUND, EXIT_INPUT = 0, 1, 2


def cmd_validate(args: argparse.Namespace) -> int:
    """Everything `pulumi up` would refuse, for every stack (or --stack) at once: the stack files,
    the manifests, the cross-manifest rules and every subsystem's rules (components.compile, which
    the program runs before registering anything); every problem of every stack in one report."""
    from components.compile import Problems, compile

    stacks = args.stack or list_stacks()
    loaded: dict[tuple[str, ...], ManifestSet | ManifestError] = {}

    def manifests(paths: Sequence[str | Path]) -> ManifestSet:
        """One load per set of paths, shared by the stacks (its problems reported once)."""
        key = tuple(map(str, paths))
        if key not in loaded:
            try:
                loaded[key] = load_manifests(paths)
            except ManifestError as exc:
                loaded[key] = exc
        result = loaded[key]
        if isinstance(result, ManifestError):
            raise result
        return result

    from components.render.egress import open_network_warnings

    found = Problems((), ())
    warnings: set[str] = set()
    with activity(f"validating stack {stacks[0]}" if stacks else "validating", total=len(stacks)) as step:
        for i, stack in enumerate(stacks):
            try:
                platform = load_platform(stack, args.paths, manifests=manifests)
            except PassportError as exc:
                found += Problems(tuple(exc.problems), (str(stack_file(stack)),))
                continue
            finally:
                step.advance(f"validating stack {stacks[i + 1]}" if i + 1 < len(stacks) else "validated")
            result = compile(platform)
            if isinstance(result, Problems):
                found += result
            else:
                warnings.update(str(w) for w in open_network_warnings(platform))
    if found.problems:
        raise found.error()
    for warning in sorted(warnings):
        print(f"warning: {warning}", file=sys.stderr)
    if not loaded:
        manifests(args.paths or ["agents"])
    sets = [m for m in loaded.values() if isinstance(m, ManifestSet)]
    agents = {a.name for m in sets for a in m.agents}
    services = {s.name for m in sets for s in m.services}
    where = f" for stacks {', '.join(stacks)}" if stacks else ""
    print(f"ok: {len(agents)} agents, {len(services)} services valid{where}")
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    from components.manifest.schema import schema_files

    out = Path(args.out)
    stale = []
    for name, text in schema_files().items():
        path = out / name
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(str(path))
            continue
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    readme = Path(args.readme)
    if readme.exists():
        from components.manifest.reference import replace_reference

        text = readme.read_text(encoding="utf-8")
        updated = replace_reference(text)
        if args.check and updated != text:
            stale.append(f"{readme} (reference section)")
        elif not args.check and updated != text:
            readme.write_text(updated, encoding="utf-8")
            print(f"updated the reference section of {readme}")
    if stale:
        print("schema out of date (run `passport schema`): " + ", ".join(stale), file=sys.stderr)
        return EXIT_FOUND
    return EXIT_OK


def explain_tables(platform: Platform, name: str) -> list[Any]:
    """The agent's identity and its grants, each with where the stack enforces it (rich tables)."""
    from rich import box
    from rich.table import Table

    from components.graph import enforcement, not_enforced_reason, path_text, window_text

    agent = platform.agent(name)
    assert agent is not None
    bom = identity_bom(platform)["agents"][name]
    ident = agent.identity
    status = f"SUSPENDED: {bom['suspendedReason']}" if bom["suspended"] else "active"
    identity = Table(title=f"{name} in stack {platform.stack} (environment {platform.config.environment})",
                     title_justify="left", box=box.SIMPLE_HEAD, show_header=False, pad_edge=False)
    identity.add_column("field", style="bold", no_wrap=True)
    identity.add_column("value", overflow="fold")
    platform_text = bom["platform"]
    if ident.namespace:
        platform_text += f" (namespace {ident.namespace}, serviceAccount {ident.service_account})"
    for field, value in (
        ("status", status),
        ("team / owner", f"{bom['team']} / {bom['owner']}"),
        ("manifest", bom["manifest"]),
        ("SPIFFE ID", bom["spiffeId"]),
        ("platform", platform_text),
        ("X.509-SVID", f"ttl {bom['x509SvidTtl']} (renewed at half-life with jitter)"),
        ("JWT-SVID", f"ttl {bom['jwtSvidTtl']}, audiences {', '.join(bom['jwtAudiences']) or '-'}"),
        ("mesh identity", bom["meshIdentity"] or "- (not meshed by Linkerd)"),
        ("subsystems", ", ".join(bom["subsystems"]) or "-"),
    ):
        identity.add_row(field, value)
    grants = Table(title=f"grants ({len(agent.grants)})", title_justify="left", box=box.SIMPLE_HEAD,
                   pad_edge=False, expand=True)
    grants.add_column("#", no_wrap=True)
    grants.add_column("kind", no_wrap=True)
    for column, ratio in (("reaches", 3), ("allows", 3), ("conditions", 3), ("enforced by", 4)):
        grants.add_column(column, overflow="fold", ratio=ratio)
    for i, g in enumerate(agent.grants):
        reaches, allows, conditions = _grant_cells(platform, agent, g, path_text, window_text)
        if g.description:
            reaches += f"\n[dim]{_escape(g.description)}[/dim]"
        where = enforcement(platform, agent, g)
        enforced = ("\n".join(f"[bold]{e.system}[/bold]: {_escape(e.detail)}" for e in where)
                    if where and not agent.suspended else f"[dim]{not_enforced_reason(platform, agent, g)}[/dim]")
        grants.add_row(str(i), g.kind, reaches, allows, conditions, enforced)
    if not agent.grants:
        grants.add_row("", "", "(none)", "", "", "")
    out: list[Any] = [identity, grants]
    if bom["suspended"]:
        out.append("note: suspended agents keep their manifest; pulumi up removes their registration, "
                   "Vault roles, IAM trust and authorization data.")
    return out


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _grant_cells(platform: Platform, agent: Any, g: Any, path_text: Any, window_text: Any) -> tuple[str, str, str]:
    """(reaches, allows, conditions) of one grant, as rich markup."""
    from components.graph import has_gateway
    from components.platform_model import grant_summary

    s = grant_summary(g)
    if g.http is not None:
        svc = platform.service(g.http.service)
        via = f" via {platform.gateway(svc).name}" if svc is not None and has_gateway(platform, svc) else ""
        allows = f"{','.join(s['methods'])} {', '.join(path_text(p) for p in s['paths'])}"
        conditions = [f"header {k}: {v}" for k, v in s["headers"].items()]
        conditions += [f"only {window_text(w)}" for w in s["timeWindows"]]
        return _escape(f"service {g.http.service}{via}"), _escape(allows), _escape("\n".join(conditions) or "-")
    if g.database is not None:
        d = g.database
        return (_escape(f"database {d.cluster}/{d.database} ({d.engine})"), _escape("\n".join(s["privileges"])),
                _escape(f"lease {d.ttl}, max {d.max_ttl}"))
    if g.vault is not None:
        return _escape(f"Vault {g.vault.path}"), _escape(", ".join(s["capabilities"])), "-"
    role = agent.identity.aws_role_name(g.aws.role)
    allows = ", ".join(s["actions"]) + "".join(f"\npolicy {arn}" for arn in s["managedPolicyArns"])
    return _escape(f"AWS IAM role {role}"), _escape(allows or "-"), _escape(f"session {g.aws.session_duration}")


def explain_text(platform: Platform, name: str, width: int = 140) -> str:
    """The tables as plain text (no colour, no control codes): for pipes, CI and tests."""
    import io

    from rich.console import Console

    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system=None, force_terminal=False, highlight=False)
    for item in explain_tables(platform, name):
        console.print(item)
    return "\n".join(line.rstrip() for line in buffer.getvalue().rstrip().splitlines()) + "\n"


def explain_json(platform: Platform, name: str) -> dict[str, Any]:
    """The agent's bill of materials (as in identity/bom.json), plus where each grant is enforced."""
    from components.graph import enforcement

    agent = platform.agent(name)
    assert agent is not None
    bom: dict[str, Any] = identity_bom(platform)["agents"][name]
    bom["enforcement"] = [[] if agent.suspended else
                          [{"system": e.system, "detail": e.detail} for e in enforcement(platform, agent, g)]
                          for g in agent.grants]
    return bom


def cmd_explain(args: argparse.Namespace) -> int:
    platform = load_platform(args.stack, args.paths)
    if platform.agent(args.agent) is None:
        where = "is not in this environment" if args.agent in platform.excluded else "does not exist"
        print(f"agent {args.agent!r} {where} (stack {args.stack})", file=sys.stderr)
        return EXIT_INPUT
    if platform.config.shard.role == "base":
        print(f"agent {args.agent!r} is deployed by a shard stack of environment {platform.config.environment}, "
              f"not by base stack {args.stack}; run `passport shards` to see which", file=sys.stderr)
        return EXIT_INPUT
    if args.format == "json":
        print(json.dumps(explain_json(platform, args.agent), indent=2))
    elif sys.stdout.isatty():
        from rich.console import Console

        console = Console(highlight=False)
        for item in explain_tables(platform, args.agent):
            console.print(item)
    else:
        print(explain_text(platform, args.agent), end="")
    return EXIT_OK


def cmd_render(args: argparse.Namespace) -> int:
    from components.compile import compile_plans
    from components.render.artifacts import render_plans, write_artifacts

    with activity(f"rendering every artifact of stack {args.stack}"):
        plans = compile_plans(load_platform(args.stack, args.paths))
        artifacts = render_plans(plans)
    with activity(f"writing {len(artifacts)} artifacts to {args.out}"):
        written, removed = write_artifacts(artifacts, Path(args.out))
    print(f"rendered {written} artifacts to {args.out}" + (f" (removed {removed} stale)" if removed else ""))
    return EXIT_OK


def cmd_shards(args: argparse.Namespace) -> int:
    from components.shard import coverage, split_gatewayless

    stacks = [(name, load_stack_config(name)) for name in list_stacks()]
    known = sorted({c.environment for _, c in stacks})
    unknown = sorted(set(args.environment or ()) - set(known))
    if unknown:
        print(f"no stack has environment {', '.join(unknown)} (known: {', '.join(known)})", file=sys.stderr)
        return EXIT_INPUT
    environments = args.environment or known
    loaded = load_manifests(args.paths or ["agents"])
    agents = [a.manifest for a in loaded.agents]
    gatewayless = {s.name for s in loaded.services if not s.manifest.spec.gateway}
    found = False
    for env in environments:
        cov = coverage(env, stacks, agents)
        if not cov.shards:
            print(f"{env}: not sharded (standalone stacks deploy every agent)")
            continue
        print(f"{env}: {len(cov.shards)} shards ({', '.join(cov.shards)})")
        for name in cov.unselected:
            print(f"  selected by no shard:  {name}")
        for name, chosen in cov.overlapping:
            print(f"  selected by {len(chosen)} shards: {name} ({', '.join(chosen)})")
        shards = [(n, c) for n, c in stacks if c.environment == env and c.shard.role == "shard"]
        split = split_gatewayless(shards, agents, gatewayless)
        for service, placed in split:
            where = "; ".join(f"{n}: {', '.join(a)}" for n, a in placed.items())
            print(f"  service without a gateway called from several shards: {service} ({where})")
        mismatched = False
        for name, cfg in stacks:
            if cfg.environment == env and cfg.shard.role == "base":
                missing = sorted(set(cov.shards) - set(cfg.shard.shards))
                extra = sorted(set(cfg.shard.shards) - set(cov.shards))
                if missing or extra:
                    mismatched = True
                    print(f"  base {name}: shard.shards misses {missing or 'none'}, lists unknown {extra or 'none'} "
                          "(its gateways load only the listed shards' OPA data)")
        found = found or not cov.ok or bool(split) or mismatched
    return EXIT_FOUND if found else EXIT_OK


def cmd_capacity(args: argparse.Namespace) -> int:
    """Counts from the validated manifests; no Platform is resolved (at 50,000 agents that took
    minutes): cross-manifest checks are `passport validate`'s."""
    from components.capacity import capacity_text, fleet_estimate

    cfg = load_stack_config(args.stack)
    with activity(f"estimating the storm and churn load of stack {args.stack}"):
        est = fleet_estimate(cfg, load_manifests(args.paths or [cfg.agents_dir]), args.instances_per_agent,
                             args.startup_window)
    print(capacity_text(est))
    return EXIT_FOUND if est.warnings() else EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    from components.check import FORMATTERS, effective_config, policies, read_policy_config, run_check

    overrides = read_policy_config(Path(args.policy_config), policies()) if args.policy_config else {}
    with activity(f"checking stack {args.stack}: the program under mocks, then the policy pack"):
        result = run_check(args.stack, Path(args.root), overrides)
    if args.write_policy_config:
        cfg = load_stack_config(args.stack, Path(args.root).resolve())
        text = json.dumps(effective_config(cfg, overrides), indent=2, sort_keys=True) + "\n"
        Path(args.write_policy_config).write_text(text, encoding="utf-8")
    print(FORMATTERS[args.format](result))
    return EXIT_FOUND if result.mandatory else EXIT_OK


def cmd_diff(args: argparse.Namespace) -> int:
    from components.diff import as_json, format_markdown, run_diff

    diff = run_diff(args.base, args.stack, Path(args.root), resources=not args.no_resources)
    print(json.dumps(as_json(diff), indent=2) if args.format == "json" else format_markdown(diff), end="")
    return EXIT_OK


def cmd_graph(args: argparse.Namespace) -> int:
    """The stack's access graph as Mermaid, DOT, SVG, PNG or JSON (components.graph)."""
    from components import graph as g

    platform = load_platform(args.stack, args.paths)
    if args.agent and platform.agent(args.agent) is None:
        where = "is not in this environment" if args.agent in platform.excluded else "does not exist"
        print(f"agent {args.agent!r} {where} (stack {args.stack})", file=sys.stderr)
        return EXIT_INPUT
    if args.service and platform.service(args.service) is None:
        known = ", ".join(s.name for s in platform.services) or "none"
        print(f"service {args.service!r} is not declared (declared: {known})", file=sys.stderr)
        return EXIT_INPUT
    if args.check and (not args.out or args.format == "png"):
        print("--check compares with the file given by --out, in a text format (svg, dot, mermaid, json)",
              file=sys.stderr)
        return EXIT_INPUT
    mode: g.Aggregate = "none" if args.format == "json" and args.aggregate == "auto" else args.aggregate
    with activity(f"drawing the access graph of stack {args.stack}"):
        graph = g.picture(platform, args.group, args.agent, args.service, mode, args.max_agents)
        dot = g.to_dot(graph)
    out = Path(args.out) if args.out else None
    if args.check and out is not None:
        if args.format == "svg":
            current = out.exists() and g.svg_is_current(out.read_text(encoding="utf-8"), dot)
        else:
            current = out.exists() and out.read_text(encoding="utf-8") == _graph_text(graph, dot, args.format)
        if not current:
            print(f"{out} is out of date: run `passport graph --stack {args.stack} --format {args.format} "
                  f"--out {out}`", file=sys.stderr)
            return EXIT_FOUND
        return EXIT_OK
    if args.format in ("svg", "png"):
        try:
            with activity(f"laying out {len(graph.nodes)} nodes and {len(graph.edges)} edges with Graphviz dot"):
                data = g.run_dot(dot, args.format)
        except g.GraphvizError as exc:
            print(str(exc), file=sys.stderr)
            return EXIT_INPUT
    else:
        data = _graph_text(graph, dot, args.format).encode()
        if args.format == "mermaid" and len(graph.edges) > g.MERMAID_MAX_EDGES:
            print(f"warning: {len(graph.edges)} edges: Mermaid draws at most {g.MERMAID_MAX_EDGES} unless the page "
                  "raises maxEdges; aggregate (--aggregate auto|team|namespace), narrow (--agent, --service) or use "
                  "--format svg", file=sys.stderr)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
        print(f"wrote {out}")
    elif args.format == "png" and sys.stdout.isatty():
        print("png is binary: write it to a file with --out FILE", file=sys.stderr)
        return EXIT_INPUT
    else:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    return EXIT_OK


def _graph_text(graph: Any, dot: str, fmt: str) -> str:
    from components import graph as g

    if fmt == "json":
        return g.json_text(graph)
    return g.to_mermaid(graph) if fmt == "mermaid" else dot


def cmd_revoke(args: argparse.Namespace) -> int:
    import os

    from components.revoke import (
        KubeRunner,
        RevokeRefused,
        find_kubectl,
        find_spire_server,
        kubectl_runner,
        revoke,
        spire_cli_runner,
    )

    platform = load_platform(args.stack, args.paths)
    runner = None
    if args.spire_server_socket and not args.undo:
        binary = find_spire_server(args.spire_server_bin)
        if binary is None:
            print("spire-server not found: pass --spire-server-bin or put it on PATH", file=sys.stderr)
            return EXIT_INPUT
        runner = spire_cli_runner(binary, args.spire_server_socket)
    kube: KubeRunner | None = None
    k8s = platform.config.kubernetes
    context = args.kube_context or (k8s.context if k8s.mode == "cluster" else None)
    kubeconfig = args.kubeconfig or (k8s.kubeconfig if k8s.mode == "cluster" else None)
    if platform.config.subsystems.authz and (context or kubeconfig or k8s.mode == "cluster"):
        kubectl = find_kubectl(args.kubectl_bin)
        if kubectl is None:
            print("kubectl not found: pass --kubectl-bin or put it on PATH (the gateways' revocation lists are "
                  "written with it)", file=sys.stderr)
            return EXIT_INPUT
        kube = kubectl_runner(kubectl, context, kubeconfig)
    try:
        return revoke(platform, args.agent, yes=args.yes, env=os.environ, out=sys.stdout,
                      vault_addr=args.vault_addr, spire_runner=runner, kube_runner=kube, undo=args.undo)
    except RevokeRefused as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return EXIT_INPUT


def cmd_engine(args: argparse.Namespace) -> int:
    """up / preview / refresh / destroy on the real Pulumi engine (components.engine)."""
    from components.engine import run

    return run(args.command, args.stack, root=Path(args.root).resolve(), yes=args.yes, diff=args.diff,
               parallel=args.parallel, checkpoints=args.checkpoints)


def cmd_recover(args: argparse.Namespace) -> int:
    from components.engine import recover

    return recover(args.stack, root=Path(args.root).resolve(), yes=args.yes)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _duration_seconds(text: str) -> int:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="passport", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = p.add_subparsers(dest="command", required=True)

    v = sub.add_parser("validate", help="validate manifests against every stack (or --stack)")
    v.add_argument("paths", nargs="*", help="manifest files or directories (default: agents/)")
    v.add_argument("--stack", action="append", help="stack to validate against (repeatable; default: all)")
    v.set_defaults(func=cmd_validate)

    s = sub.add_parser("schema", help="write the JSON Schemas generated from the models")
    s.add_argument("--out", default="schema", help="directory (default: schema/)")
    s.add_argument("--check", action="store_true", help="fail if the committed schemas are out of date")
    s.add_argument("--readme", default="README.md", help="README whose reference section is regenerated")
    s.set_defaults(func=cmd_schema)

    e = sub.add_parser("explain", help="print an agent's resolved identity and grants")
    e.add_argument("agent")
    e.add_argument("--stack", required=True)
    e.add_argument("--format", choices=["text", "json"], default="text")
    e.add_argument("--paths", nargs="*", default=None, help="manifest paths (default: the stack's agentsDir)")
    e.set_defaults(func=cmd_explain)

    r = sub.add_parser("render", help="write every generated artifact of a stack for review")
    r.add_argument("--stack", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--paths", nargs="*", default=None, help="manifest paths (default: the stack's agentsDir)")
    r.set_defaults(func=cmd_render)
    sh = sub.add_parser("shards", help="report agents selected by no shard stack or by several")
    sh.add_argument("--environment", action="append", help="environment to check (default: all)")
    sh.add_argument("--paths", nargs="*", default=None, help="manifest paths (default: agents/)")
    sh.set_defaults(func=cmd_shards)

    c = sub.add_parser("capacity", help="estimate the credential chain's load: SPIRE signings, Vault logins, "
                       "database churn, leases (steady state and cold-start storm)")
    c.add_argument("--stack", required=True)
    c.add_argument("--instances-per-agent", type=_positive_int, default=None,
                   help="workload instances per agent (default: the stack's capacity.instancesPerAgent)")
    c.add_argument("--startup-window", type=_duration_seconds, default=None,
                   help="window a cold start spreads over (default: the stack's capacity.startupWindow)")
    c.add_argument("--paths", nargs="*", default=None, help="manifest paths (default: the stack's agentsDir)")
    c.set_defaults(func=cmd_capacity)

    ck = sub.add_parser("check", help="run the policy pack offline on the stack's resource graph (mocks)")
    ck.add_argument("--stack", required=True)
    ck.add_argument("--format", choices=["text", "json", "sarif"], default="text")
    ck.add_argument("--policy-config", help="pack config JSON (the format of pulumi's --policy-pack-config)")
    ck.add_argument("--write-policy-config", metavar="FILE",
                    help="also write the effective pack config for `pulumi preview --policy-pack-config`")
    ck.add_argument("--root", default=".", help="project directory (default: .)")
    ck.set_defaults(func=cmd_check)

    d = sub.add_parser("diff", help="Markdown report of what the change since --base does to a stack")
    d.add_argument("--base", required=True, help="git revision to compare against (e.g. origin/main)")
    d.add_argument("--stack", required=True)
    d.add_argument("--format", choices=["markdown", "json"], default="markdown")
    d.add_argument("--no-resources", action="store_true", help="skip running the program under mocks")
    d.add_argument("--root", default=".", help="project directory (default: .)")
    d.set_defaults(func=cmd_diff)

    gr = sub.add_parser("graph", help="the stack's access graph: who can reach what (mermaid, dot, svg, png, json)")
    gr.add_argument("--stack", required=True)
    only = gr.add_mutually_exclusive_group()
    only.add_argument("--agent", help="only this agent and what it reaches")
    only.add_argument("--service", help="only this service, its gateway and its callers")
    gr.add_argument("--format", choices=["mermaid", "dot", "svg", "png", "json"], default="mermaid",
                    help="mermaid (Markdown), dot (Graphviz), svg/png (drawn by Graphviz's dot), json (tools)")
    gr.add_argument("--group", choices=["team", "namespace"], default="team",
                    help="draw agents and services in boxes per team (default) or namespace")
    gr.add_argument("--aggregate", choices=["auto", "none", "team", "namespace"], default="auto",
                    help="merge agents per team or namespace; auto (default): when there are more than "
                    "--max-agents (pictures only: json keeps every edge unless this is given)")
    gr.add_argument("--max-agents", type=_positive_int, default=40,
                    help="agents a picture draws one by one before aggregating (default 40)")
    gr.add_argument("--out", help="write to this file (default: stdout)")
    gr.add_argument("--check", action="store_true",
                    help="fail if --out is not what this graph draws (an svg: drawn from the same DOT)")
    gr.add_argument("--paths", nargs="*", default=None, help="manifest paths (default: the stack's agentsDir)")
    gr.set_defaults(func=cmd_graph)

    rv = sub.add_parser("revoke", help="incident kill switch: gateways deny the agent's SPIFFE ID, its Vault "
                        "leases/tokens and SPIRE entries are revoked, now (dry run without --yes)")
    rv.add_argument("agent")
    rv.add_argument("--stack", required=True)
    rv.add_argument("--vault-addr", default=None, help="Vault address (default: the stack's vault.address)")
    rv.add_argument("--spire-server-socket", default=None, help="SPIRE server admin API socket")
    rv.add_argument("--spire-server-bin", default=None, help="spire-server binary (default: PATH, tools cache)")
    rv.add_argument("--kube-context", default=None,
                    help="kubeconfig context of the gateways' cluster (default: the stack's kubernetes.context)")
    rv.add_argument("--kubeconfig", default=None, help="kubeconfig (default: the stack's kubernetes.kubeconfig)")
    rv.add_argument("--kubectl-bin", default=None, help="kubectl binary (default: PATH, tools cache)")
    rv.add_argument("--undo", action="store_true",
                    help="take the agent's SPIFFE ID off the gateways' revocation lists again")
    rv.add_argument("--yes", action="store_true", help="really revoke (default: dry run)")
    rv.add_argument("--paths", nargs="*", default=None, help="manifest paths (default: the stack's agentsDir)")
    rv.set_defaults(func=cmd_revoke)

    from components.ca_cli import add_ca_parser  # passport ca status|rotate|compromise|drill

    add_ca_parser(sub)

    engine_help = {
        "up": "deploy the stack with the Pulumi engine (the policy pack attached, mandatory)",
        "preview": "show what `up` would change, with the policy pack",
        "refresh": "read the deployed resources back into the stack's state",
        "destroy": "delete every resource of the stack",
    }
    for action, text in engine_help.items():
        en = sub.add_parser(action, help=text)
        en.add_argument("--stack", required=True)
        en.add_argument("--yes", action="store_true", help="do it without asking (up, destroy)")
        en.add_argument("--diff", action="store_true", help="show property-level diffs (up, preview)")
        en.add_argument("--parallel", type=_positive_int, default=None, help="resource operations at once")
        en.add_argument("--checkpoints", choices=["auto", "always", "never"], default="auto",
                        help="save the state after every step (always), only at the end (never), or "
                        "skip per-step saves only where a crash is repaired by re-running (auto)")
        en.add_argument("--root", default=".", help="project directory (default: .)")
        en.set_defaults(func=cmd_engine)

    rc = sub.add_parser("recover", help="after an engine crash: drop its stale lock, refresh, then up")
    rc.add_argument("--stack", required=True)
    rc.add_argument("--yes", action="store_true", help="do it (default: print the plan)")
    rc.add_argument("--root", default=".", help="project directory (default: .)")
    rc.set_defaults(func=cmd_recover)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except PassportError as exc:
        print(exc.report(), file=sys.stderr)
        return EXIT_INPUT
    except OSError as exc:  # a path given on the command line that cannot be read or written
        print(f"{exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_INPUT
    except Exception as exc:  # the program under mocks reports user errors as pulumi.RunError
        if type(exc).__name__ != "RunError":
            raise
        print(str(exc).strip(), file=sys.stderr)
        return EXIT_INPUT
    return code


if __name__ == "__main__":
    sys.exit(main())
