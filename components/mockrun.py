"""Run the real program (``__main__.py``) under Pulumi's mocks and capture the resource graph.

Used by the component tests and by ``passport check``: no engine, no backend, no cloud
credentials, no network. The monitor records every registration (type, name, parent, inputs
as the provider would receive them, dependencies); the mocks return plausible computed outputs
(PEMs, ARNs, names) so dependants see values.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import runpy
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from pulumi.runtime import mocks as pmocks
from pulumi.runtime import rpc
from pulumi.runtime.settings import set_root_resource
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from components import PROJECT
from components.config import stack_file, stack_runtime_config
from components.shard import placeholder_base_outputs


@dataclass
class Captured:
    """One registered resource."""

    type: str
    name: str
    urn: str
    parent: str
    custom: bool
    inputs: dict[str, Any]
    dependencies: list[str] = field(default_factory=list)
    provider: str = ""
    ignore_changes: list[str] = field(default_factory=list)
    """Fields ``pulumi up`` would not overwrite (the ``ignore_changes`` resource option)."""


@dataclass
class Graph:
    """Everything a program registered, in registration order, plus its stack outputs."""

    resources: list[Captured]
    outputs: dict[str, Any]
    stack: str

    def of_type(self, type_: str) -> list[Captured]:
        return [r for r in self.resources if r.type == type_]

    def named(self, name: str) -> Captured:
        matches = [r for r in self.resources if r.name == name]
        if len(matches) != 1:
            raise KeyError(f"{len(matches)} resources named {name!r}")
        return matches[0]

    def by_urn(self, urn: str) -> Captured | None:
        return next((r for r in self.resources if r.urn == urn), None)

    def children_of(self, urn: str) -> list[Captured]:
        return [r for r in self.resources if r.parent == urn]

    def ancestors(self, r: Captured) -> Iterator[Captured]:
        parent = self.by_urn(r.parent)
        while parent is not None:
            yield parent
            parent = self.by_urn(parent.parent)


def _fake_pem(kind: str, seed: str) -> str:
    body = hashlib.sha256(seed.encode()).hexdigest()
    return f"-----BEGIN {kind}-----\nMOCK{body}\n-----END {kind}-----\n"


def computed_outputs(type_: str, name: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """Plausible provider-computed outputs so dependants of a resource see values."""
    out: dict[str, Any] = dict(inputs)
    seed = f"{type_}/{name}"
    if type_ == "tls:index/privateKey:PrivateKey":
        out |= {"privateKeyPem": _fake_pem("PRIVATE KEY", seed), "publicKeyPem": _fake_pem("PUBLIC KEY", seed),
                "privateKeyPemPkcs8": _fake_pem("PRIVATE KEY", seed), "publicKeyOpenssh": "ecdsa-sha2-nistp256 MOCK"}
    elif type_ in ("tls:index/selfSignedCert:SelfSignedCert", "tls:index/locallySignedCert:LocallySignedCert"):
        out |= {"certPem": _fake_pem("CERTIFICATE", seed), "validityStartTime": "2026-01-01T00:00:00Z",
                "validityEndTime": "2036-01-01T00:00:00Z", "readyForRenewal": False}
    elif type_ == "tls:index/certRequest:CertRequest":
        out |= {"certRequestPem": _fake_pem("CERTIFICATE REQUEST", seed)}
    elif type_.startswith("aws:"):
        resource = type_.rsplit(":", maxsplit=1)[-1]
        res_name = inputs.get("name") or name
        out |= {"arn": f"arn:aws:mock:us-east-1:123456789012:{resource.lower()}/{res_name}", "name": res_name}
        if type_ == "aws:acmpca/certificateAuthority:CertificateAuthority":
            out |= {"certificate": _fake_pem("CERTIFICATE", seed), "certificateChain": "",
                    "certificateSigningRequest": _fake_pem("CERTIFICATE REQUEST", seed)}
    elif type_.startswith("kubernetes:"):
        meta = dict(inputs.get("metadata") or {})
        meta.setdefault("name", name)
        out["metadata"] = meta
    elif type_.startswith("vault:"):
        out.setdefault("accessor", f"auth_mock_{hashlib.sha256(seed.encode()).hexdigest()[:8]}")
        if type_.startswith("vault:pkiSecret/"):
            out |= {"certificate": _fake_pem("CERTIFICATE", seed), "issuingCa": _fake_pem("CERTIFICATE", seed + "ca"),
                    "csr": _fake_pem("CERTIFICATE REQUEST", seed)}
    return out


STACK_REFERENCE = "pulumi:pulumi:StackReference"


class PassportMocks(pmocks.Mocks):
    """Mocks returning :func:`computed_outputs`; invokes answer what our programs call.

    A ``pulumi.StackReference`` reads ``stack_outputs[<stack name>]`` (e.g. a base stack's
    outputs captured by another run), else a base stack's exports with mock values.
    """

    def __init__(self, stack_outputs: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.stack_outputs = dict(stack_outputs or {})

    def new_resource(self, args: pmocks.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        if args.typ == STACK_REFERENCE:
            stack = str(args.inputs.get("name") or args.resource_id)
            outputs = self.stack_outputs.get(stack)
            return stack, {"name": stack, "outputs": dict(outputs if outputs is not None
                                                          else placeholder_base_outputs(stack)),
                           "secretOutputNames": []}
        return f"{args.name}-id", computed_outputs(args.typ, args.name, args.inputs)

    def call(self, args: pmocks.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        if args.token == "aws:iam/getPolicyDocument:getPolicyDocument":
            return {"json": json.dumps({"Version": "2012-10-17", "Statement": args.args.get("statements", [])})}, None
        if args.token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {"accountId": "123456789012", "arn": "arn:aws:iam::123456789012:user/mock", "userId": "MOCK"}, None
        if args.token == "aws:index/getRegion:getRegion":
            return {"name": "us-east-1", "region": "us-east-1"}, None
        return {}, None


class CapturingMonitor(pmocks.MockMonitor):
    """MockMonitor that also records the request: type, name, parent, inputs, dependencies."""

    def __init__(self, mocks: pmocks.Mocks) -> None:
        super().__init__(mocks)
        self.captured: list[Captured] = []

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)  # type: ignore[no-untyped-call]
        if request.type != "pulumi:pulumi:Stack":
            self.captured.append(Captured(
                type=request.type,
                name=request.name,
                urn=response.urn,
                parent=request.parent,
                custom=bool(request.custom),
                inputs=rpc.deserialize_properties(request.object),
                dependencies=list(request.dependencies),
                provider=request.provider,
                ignore_changes=list(request.ignoreChanges),
            ))
        return response

    def ReadResource(self, request: Any) -> Any:
        response = super().ReadResource(request)  # type: ignore[no-untyped-call]
        self.captured.append(Captured(
            type=request.type,
            name=request.name,
            urn=response.urn,
            parent=request.parent,
            custom=True,
            inputs=rpc.deserialize_properties(request.properties),
            dependencies=list(request.dependencies),
            provider=request.provider,
        ))
        return response


def _resolve(value: Any) -> Any:
    if isinstance(value, pulumi.Output):
        return _resolve(_sync_await(value.future()))
    if isinstance(value, dict):
        return {k: _resolve(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_resolve(v) for v in value]
    return value


def run_program(
    stack: str,
    root: Path | None = None,
    config: Mapping[str, str] | None = None,
    secret_keys: list[str] | None = None,
    stack_outputs: Mapping[str, Mapping[str, Any]] | None = None,
) -> Graph:
    """Run ``<root>/__main__.py`` for ``stack`` under mocks; return the captured graph.

    ``config`` defaults to the stack file's values (``stacks/Pulumi.<stack>.yaml``), as the
    engine would pass them; pass it to run variants without writing files. ``stack_outputs``
    (stack name -> outputs) answers the program's ``pulumi.StackReference`` reads.
    """
    root = (root or Path.cwd()).resolve()
    if config is None:
        config, secret_keys = stack_runtime_config(stack_file(stack, root))
    main = root / "__main__.py"
    with contextlib.chdir(root):
        def program() -> None:
            runpy.run_path(str(main), run_name="__main__")

        return run_function(program, stack, config, secret_keys, stack_outputs)


def run_function(
    program: Callable[[], None],
    stack: str,
    config: Mapping[str, str] | None = None,
    secret_keys: list[str] | None = None,
    stack_outputs: Mapping[str, Mapping[str, Any]] | None = None,
) -> Graph:
    """Run any Pulumi program function under the same mocks and monitor as :func:`run_program`
    (``benchmarks/program.py`` measures its floor, a trivial program, this way)."""
    pulumi.runtime.set_all_config(dict(config or {}), list(secret_keys or []))
    monitor = CapturingMonitor(PassportMocks(stack_outputs))
    set_root_resource(None)  # type: ignore[arg-type]  # a fresh Stack per run
    pmocks.set_mocks(monitor.mocks, project=PROJECT, stack=stack, preview=False, monitor=monitor)
    _sync_await(run_pulumi_func(program))
    stack_resource = pulumi.runtime.settings.get_root_resource()
    outputs = _resolve(getattr(stack_resource, "outputs", {}))
    return Graph(resources=monitor.captured, outputs=outputs, stack=stack)
