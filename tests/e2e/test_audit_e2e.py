"""End to end on 127.0.0.1: the audit collector built by scripts/bootstrap-tools (``otelcol-audit``,
OpenTelemetry Collector 0.165.0) runs the rendered config and ships log lines that a real SPIRE
server, a real OPA, a real Envoy and a real OpenBao just wrote (and a Linkerd proxy denial in
linkerd2-proxy's format: no Linkerd binary runs here) into an S3 with Object Lock (PyPI ``moto`` in
server mode), and the objects are what an auditor expects.

* The engines write as they do in a pod: the SPIRE server runs the dev config
  (tests/support/spire_server.py) and serves a few API calls; OPA runs with console decision logs
  (without the gateway's mask.rego, so the collector's own masking is what is tested) and decides
  one request carrying an ``Authorization`` header and a W3C ``traceparent``; Envoy runs a listener
  with the gateway's rendered JSON access log and serves one request. Their stdout/stderr lines are
  laid out as the kubelet does, ``<RFC3339Nano> <stream> F <line>`` under
  ``pods/<namespace>_<pod>_<uid>/<container>/0.log``.
* The bucket is made like the AuditTrail makes it: Object Lock, default retention COMPLIANCE for
  ``audit.retention``. The collector has no key in its config; the test gives the process moto's
  dummy credentials in its environment.
* moto's Object Lock refuses deleting a locked version (as S3 does) but lets a COMPLIANCE retention
  be shortened (S3 does not), so only the former is asserted; docs/audit.md has the real-S3 checks.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import http.client
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from components.config.audit import AuditConfig
from components.platform_model import Platform, load_platform
from components.render import audit as ra
from components.render import envoy as envoy_render
from components.render.aws import audit_object_lock_rule
from components.render.vault import plan_vault
from components.render.yamlout import dump_yaml
from tests.support.bao import bao_dev_server
from tests.support.processes import stop
from tests.support.spire_server import SPIRE_SERVER, local_spire_server, needs_server, run_tool
from tests.support.tools import free_port, require_tool, wait_until

pytestmark = pytest.mark.e2e

BUCKET = "agentpassport-audit-e2e"
REGION = "us-east-1"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
TOKEN = "eyJhbGciOiJFUzI1NiJ9.c2VjcmV0LXRva2Vu.c2lnbmF0dXJl"
CALLER = "spiffe://dev.agentpassport.internal/ns/agents/sa/cortex"
DUMMY_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": REGION}
POD_UID = "0a1b2c3d-0000-4000-8000-00000000000"
PERSON = "alice-operator"
QUERY_SECRET = "qs-0f3c9a7e5b1d"
"""A credential in a query string (OAuth's access_token=): masked in url.original and event.original."""
REQUEST_PATH = f"/v1/orders?limit=5&access_token={QUERY_SECRET}"


# --------------------------------------------------------------------------- helpers


def _cri(lines: list[str], stream: str = "stdout") -> str:
    """Lines as the kubelet writes a container log (CRI format, one full line each)."""
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")
    return "".join(f"{now} {stream} F {line}\n" for line in lines if line.strip())


def _pod_log(root: Path, namespace: str, pod: str, n: int, container: str, text: str) -> None:
    d = root / f"{namespace}_{pod}_{POD_UID}{n}" / container
    d.mkdir(parents=True, exist_ok=True)
    (d / "0.log").write_text(text, encoding="utf-8")


@contextlib.contextmanager
def _process(args: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            yield proc
        finally:
            stop(proc, grace_s=10)


def _s3(endpoint: str) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name=REGION,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def _http_ok(port: int, path: str = "/", method: str = "GET", body: str | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def _up(port: int) -> bool:
    try:
        _http_ok(port)
    except OSError:
        return False
    return True


# --------------------------------------------------------------------------- real engines writing logs


def _spire_lines(tmp: Path) -> list[str]:
    """A real SPIRE server's log while it serves entry, token and SVID calls (its audit log is on)."""
    with local_spire_server(tmp / "spire", log_format="json") as server:  # json, as rendered
        sock = ["-socketPath", str(server.socket)]
        for args in (["entry", "create", "-parentID", "spiffe://dev.agentpassport.internal/node",
                      "-spiffeID", CALLER, "-selector", "unix:uid:1000"],
                     ["token", "generate", "-spiffeID", "spiffe://dev.agentpassport.internal/node"],
                     ["x509", "mint", "-spiffeID", CALLER]):
            res = run_tool([str(SPIRE_SERVER), *args, *sock])
            assert res.returncode == 0, res.stderr
        time.sleep(0.5)  # let the server flush its last lines
    return server.log.read_text(encoding="utf-8").splitlines()


def _opa_lines(tmp: Path) -> list[str]:
    """A real OPA's console decision log for one request (no mask policy loaded)."""
    opa = require_tool("opa")
    policy = tmp / "authz.rego"
    policy.write_text('package agentpassport.authz\n\ndecision := {"allowed": false, "reason": "no grant"}\n')
    port = free_port()
    log = tmp / "opa.log"
    with _process([str(opa), "run", "--server", f"--addr=127.0.0.1:{port}", "--set=decision_logs.console=true",
                   "--log-format=json", str(policy)], log) as proc:
        wait_until(lambda: _up(port) or proc.poll() is not None, 30, "opa to listen")
        request = {"input": {"attributes": {
            "source": {"principal": CALLER, "address": {"socketAddress": {"address": "10.1.2.3"}}},
            "request": {"http": {"method": "GET", "path": REQUEST_PATH, "headers": {
                "authorization": f"Bearer {TOKEN}", "traceparent": TRACEPARENT, "x-request-id": "req-1"}}}}}}
        status, _ = _http_ok(port, "/v1/data/agentpassport/authz/decision", "POST", json.dumps(request),
                             {"Content-Type": "application/json"})
        assert status == 200
        wait_until(lambda: "decision_id" in log.read_text(), 10, "opa's decision log line")
    return log.read_text(encoding="utf-8").splitlines()


def _envoy_lines(tmp: Path) -> list[str]:
    """A real Envoy's access log (the gateway's rendered JSON format) for one request."""
    envoy = require_tool("envoy")
    port, admin = free_port(), free_port()
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
                 ".HttpConnectionManager",
        "stat_prefix": "gw",
        "access_log": envoy_render._access_log(),
        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
            {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok"}}}]}]},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
    }
    bootstrap = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {"listeners": [{
            "name": "gw", "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                            "typed_config": hcm}]}]}]},
    }
    conf = tmp / "envoy.yaml"
    conf.write_text(dump_yaml(bootstrap))
    log = tmp / "envoy.log"
    access = tmp / "envoy-access.log"
    with access.open("wb") as out, log.open("wb") as err:
        proc = subprocess.Popen([str(envoy), "-c", str(conf), "--log-level", "warn", "--base-id",
                                 str(port)], stdout=out, stderr=err)
        try:
            wait_until(lambda: _up(port) or proc.poll() is not None, 60, "envoy to listen")
            assert proc.poll() is None, log.read_text()
            status, _ = _http_ok(port, REQUEST_PATH, headers={
                "traceparent": TRACEPARENT, "x-request-id": "req-1", "authorization": f"Bearer {TOKEN}"})
            assert status == 200
            wait_until(lambda: "duration_ms" in access.read_text(), 10, "envoy's access log line")
        finally:
            stop(proc, grace_s=10)
    return access.read_text(encoding="utf-8").splitlines()


def _vault_lines() -> list[str]:
    """A real OpenBao's stdout with the plan's audit device (file to stdout, JSON) while a person
    logs in with userpass and reads a secret: a human the bucket must never name."""
    plan = plan_vault(load_platform("dev"))
    with bao_dev_server() as bao:
        root = bao.client()
        root.sys.enable_audit_device(plan.audit_type, path=f"agent-passport-{plan.audit_type}",
                                     options=dict(plan.audit_options))
        root.sys.enable_auth_method("userpass")
        root.write("auth/userpass/users/" + PERSON, password="correct-horse-battery", token_policies="default")
        person = bao.client(token="")
        person.auth.userpass.login(PERSON, "correct-horse-battery")
        person.lookup_token()
        lines = bao.log.read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.startswith("{")] + ["==> OpenBao server started! (a non-audit line)"]


def _linkerd_lines(platform: Platform) -> tuple[list[str], str, str]:
    """A Linkerd proxy's denial as linkerd2-proxy logs it (text format; no Linkerd binary runs here),
    for a caller that is one of the stack's agents; (lines, its SPIFFE ID, its mesh identity)."""
    agent = next(a for a in platform.active_agents if a.identity.linkerd_identity)
    mesh_id = agent.identity.linkerd_identity
    assert mesh_id is not None
    denied = ("[  1042.118s]  INFO ThreadId(01) inbound:server{port=8080}: linkerd_app_inbound::policy::http: "
              "Request denied server.group=policy.linkerd.io server.kind=server server.name=orders-http "
              "route.group= route.kind=default route.name=default client.tls=Some(Established { client_id: "
              f'Some(ClientId(Name("{mesh_id}"))), negotiated_protocol: None }}) client.ip=10.4.0.17')
    other = "[  1042.120s]  INFO ThreadId(01) linkerd_proxy::signal: received SIGTERM, starting shutdown"
    return [denied, other], agent.identity.spiffe_id, mesh_id


# --------------------------------------------------------------------------- the test


def _platform(pods: Path) -> Platform:
    base = load_platform("dev")
    audit = AuditConfig.model_validate({
        "retention": "1d", "bucket": BUCKET, "batchTimeout": "1s", "credentials": "irsa",
        "roleArn": "arn:aws:iam::111122223333:role/agentpassport-dev-audit-collector",
        "sources": {"spire": [f"{pods}/*/spire-server/*.log"], "opa": [f"{pods}/*_gw-*/opa/*.log"],
                    "envoy": [f"{pods}/*_gw-*/envoy/*.log"], "vault": [f"{pods}/vault_*/vault/*.log"],
                    "linkerd": [f"{pods}/*/linkerd-proxy/*.log"]},
    })
    cfg = base.config.model_copy(update={
        "subsystems": base.config.subsystems.model_copy(update={"audit": True}), "audit": audit})
    return Platform(base.stack, cfg, base.config_file, base.agents, base.services)


def _keys_of(value: Any) -> set[str]:
    """Every mapping key of a parsed document, at any depth."""
    if isinstance(value, dict):
        return set(map(str, value)) | {k for v in value.values() for k in _keys_of(v)}
    if isinstance(value, list):
        return {k for v in value for k in _keys_of(v)}
    return set()


def _documents(s3: Any) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """Every object's JSON lines, by dataset: (key, document)."""
    out: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for obj in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        body = s3.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read()
        if body[:2] == b"\x1f\x8b":
            body = gzip.decompress(body)
        for line in body.decode().splitlines():
            doc = json.loads(line)
            out.setdefault(doc["event"]["dataset"], []).append((obj["Key"], doc))
    return out


@needs_server
def test_collector_ships_real_engine_logs_into_object_lock(tmp_path: Path) -> None:
    collector = require_tool("otelcol-audit")
    moto = require_tool("moto_server")
    pods = tmp_path / "pods"
    _pod_log(pods, "spire-system", "spire-server-0", 1, "spire-server", _cri(_spire_lines(tmp_path), "stderr"))
    _pod_log(pods, "agents", "gw-orders-5d8f7c9b4-x2x7q", 2, "opa", _cri(_opa_lines(tmp_path), "stderr"))
    _pod_log(pods, "agents", "gw-orders-5d8f7c9b4-x2x7q", 2, "envoy", _cri(_envoy_lines(tmp_path)))
    _pod_log(pods, "vault", "vault-0", 3, "vault", _cri(_vault_lines()))
    platform = _platform(pods)
    linkerd, linkerd_caller, mesh_id = _linkerd_lines(platform)
    _pod_log(pods, "orders", "orders-6b7c-9k2lp", 4, "linkerd-proxy", _cri(linkerd))
    s3_port = free_port()
    endpoint = f"http://127.0.0.1:{s3_port}"
    with _process([str(moto), "-H", "127.0.0.1", "-p", str(s3_port)], tmp_path / "moto.log"):
        wait_until(lambda: _up(s3_port), 30, "moto_server to listen")
        s3 = _s3(endpoint)
        days = audit_object_lock_rule(platform.config.aws.audit_bucket, "", platform.config.audit.retention_days)
        s3.create_bucket(Bucket=BUCKET, ObjectLockEnabledForBucket=True)
        s3.put_object_lock_configuration(Bucket=BUCKET, ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": days["default_retention"]["days"]}}})

        target = ra.AuditTarget(bucket=BUCKET, region=REGION)
        conf = ra.collector_config(platform, target, endpoint=endpoint, state_dir=str(tmp_path / "state"),
                                   telemetry_host="127.0.0.1", telemetry_port=free_port())
        conf_text = dump_yaml(conf)
        # the config holds no key: no key setting anywhere (the masking patterns name such keys in
        # their text, as values), and not the dummy key the environment carries
        assert not _keys_of(conf) & {"access_key", "secret_key", "session_token"} and "testing" not in conf_text
        (tmp_path / "collector.yaml").write_text(conf_text)
        env = {"PATH": os.environ.get("PATH", ""), "K8S_NODE_NAME": "node-e2e",
               "AWS_EC2_METADATA_DISABLED": "true", **DUMMY_ENV}
        log = tmp_path / "collector.log"
        started = dt.datetime.now(dt.UTC)
        with _process([str(collector), f"--config={tmp_path / 'collector.yaml'}"], log, env) as proc:
            wait_until(lambda: set(ra.DATASETS.values()) <= set(_documents(s3))
                       or proc.poll() is not None, 90, "documents of every source in the bucket")
            assert proc.poll() is None, log.read_text()
        docs = _documents(s3)

        # ---- every document is ECS, keyed by SPIFFE ID and trace ID where the line carries them
        for dataset, items in docs.items():
            for key, doc in items:
                assert key.startswith(f"agentpassport/dev/{dataset}/year={started:%Y}/month={started:%m}/")
                assert doc["ecs"]["version"] and doc["event"]["stack"] == "dev" and doc["@timestamp"]
                assert doc["host"]["name"] == "node-e2e"
        (opa_key, decision), = [(k, d) for k, d in docs["opa.decision"]]
        assert decision["spiffe_id"] == CALLER and decision["trace"]["id"] == TRACE_ID
        assert decision["event"]["outcome"] == "failure" and decision["event"]["reason"] == "no grant"
        assert decision["url"]["path"] == "/v1/orders" and decision["http"]["request"]["method"] == "GET"
        assert decision["kubernetes"] == {"namespace": "agents", "pod": {"name": "gw-orders-5d8f7c9b4-x2x7q"}}
        # ---- the credential in the request arrives masked, nowhere in clear
        assert '"authorization":"[masked]"' in decision["event"]["original"].replace(" ", "")
        # (the readiness probes' GET / are in the access log too)
        (envoy_key, access), = [(k, d) for k, d in docs["envoy.access"] if d["url"]["path"] == "/v1/orders"]
        assert access["trace"]["id"] == TRACE_ID and access["http"]["request"]["id"] == "req-1"
        assert access["url"]["path"] == "/v1/orders" and access["event"]["action"] == "gateway-request"
        spire = [d for _, d in docs["spire"]]
        assert any(d.get("spiffe_id") == CALLER for d in spire), spire
        assert {d["kubernetes"]["namespace"] for d in spire} == {"spire-system"}
        # ---- Vault: the person's login is recorded, the person is not named
        vault = [d for _, d in docs["vault.audit"]]
        logins = [d for d in vault if d["event"]["action"] == "vault-login"]
        assert {d["url"]["path"] for d in logins} == {"auth/userpass/login/redacted"}, vault
        named = [d["user"]["name"] for d in vault if "user" in d]
        assert "redacted" in named and set(named) <= {"redacted"}, named
        assert "auth/userpass/users/redacted" in {d["url"]["path"] for d in vault}
        assert {d["event"]["outcome"] for d in vault} >= {"success"}
        assert PERSON not in json.dumps(vault) and "event" in vault[0] and "original" not in vault[0]["event"]
        # ---- Linkerd: only the denial, mapped to the caller's SPIFFE ID
        (denial,) = [d for _, d in docs["linkerd.authz"]]
        assert denial["spiffe_id"] == linkerd_caller and denial["source"]["ip"] == "10.4.0.17"
        assert denial["agentpassport"]["mesh"] == {"client_id": mesh_id, "server": "orders-http",
                                                   "route": "default"}
        everything = json.dumps(docs)
        assert TOKEN not in everything and TOKEN.split(".")[1] not in everything
        assert "correct-horse-battery" not in everything
        assert QUERY_SECRET not in everything and "access_token=[masked]" in decision["event"]["original"]
        assert "access_token=[masked]" in access["url"]["original"]

        # ---- retention set on every object: COMPLIANCE until a day from now
        for dataset, items in docs.items():
            for key, _ in items:
                head = s3.head_object(Bucket=BUCKET, Key=key)
                assert head["ObjectLockMode"] == "COMPLIANCE", (dataset, key)
                until = head["ObjectLockRetainUntilDate"]
                assert started + dt.timedelta(hours=23) < until < started + dt.timedelta(days=1, hours=1)

        # ---- deleting or overwriting a locked version fails; the version stays as written
        from botocore.exceptions import ClientError

        head = s3.head_object(Bucket=BUCKET, Key=opa_key)
        version = head["VersionId"]
        original = s3.get_object(Bucket=BUCKET, Key=opa_key, VersionId=version)["Body"].read()
        with pytest.raises(ClientError) as denied:
            s3.delete_object(Bucket=BUCKET, Key=opa_key, VersionId=version)
        assert denied.value.response["Error"]["Code"] == "AccessDenied"
        batch = s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": envoy_key, "VersionId": s3.head_object(
            Bucket=BUCKET, Key=envoy_key)["VersionId"]}]})
        assert [e["Code"] for e in batch.get("Errors", [])] == ["AccessDenied"]
        rewrite = s3.put_object(Bucket=BUCKET, Key=opa_key, Body=b"{}", ChecksumAlgorithm="CRC32")
        assert rewrite["VersionId"] != version  # a PUT makes a new version; the locked one is untouched
        assert s3.get_object(Bucket=BUCKET, Key=opa_key, VersionId=version)["Body"].read() == original
