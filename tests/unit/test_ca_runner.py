"""The ``passport ca`` runner against an in-memory SPIRE that enforces the server's rules
(prepare -> activate -> old; taint only old; revoke only tainted), with a fake clock: resuming
a rotation, refusing without --yes, never revoking the active authority. The real server is
tests/e2e/test_ca_lifecycle_e2e.py."""

from __future__ import annotations

import io
import itertools
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from components.ca_lifecycle import CaError, Kind, LocalAuthority, ServerState
from components.ca_runner import Clock, compromise, rotate
from components.platform_model import Platform, load_platform

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


@dataclass
class Slot:
    id: str
    state: str  # active | prepared | old
    tainted: bool = False


@dataclass
class FakeSpire:
    """SPIRE's local-authority rules, in memory. ``calls`` records every mutating call."""

    slots: dict[Kind, list[Slot]] = field(default_factory=lambda: {"x509": [Slot("x-a", "active")],
                                                                   "jwt": [Slot("j-a", "active")]})
    agents: dict[str, str] = field(default_factory=lambda: {"spiffe://td/agent/1": "serial-1"})
    calls: list[str] = field(default_factory=list)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(2))
    resign_on_taint: bool = True
    trust_domain: str = "local.agentpassport.internal"
    socket: str = ""

    def state(self) -> ServerState:
        out = [LocalAuthority(k, s.id, s.state, NOW + timedelta(hours=20), NOW - timedelta(hours=1),  # type: ignore[arg-type]
                              tainted=s.tainted, in_bundle=True) for k, ss in self.slots.items() for s in ss]
        return ServerState(self.trust_domain, tuple(out), 300)

    def agent_serials(self) -> dict[str, str]:
        return dict(self.agents)

    def prepare(self, kind: Kind) -> str:
        ss = self.slots[kind]
        ss[:] = [s for s in ss if s.state == "active"]  # a prepare replaces the next slot
        new = Slot(f"{kind[0]}-{next(self.ids)}", "prepared")
        ss.append(new)
        self.calls.append(f"prepare {kind}")
        return new.id

    def local(self, action: str, kind: Kind, authority_id: str) -> None:
        ss = self.slots[kind]
        (s,) = [x for x in ss if x.id == authority_id]
        if action == "activate":
            assert s.state == "prepared"
            for x in ss:
                if x.state == "active":
                    x.state = "old"
            s.state = "active"
        elif action == "taint":
            if s.state != "old":
                raise CaError("only Old local authorities can be tainted")
            s.tainted = True
            if self.resign_on_taint:
                self.agents = {a: v + "'" for a, v in self.agents.items()}
        elif action == "revoke":
            if not s.tainted:
                raise CaError("it is not possible to revoke an untainted root CA")
            ss.remove(s)
        self.calls.append(f"{action} {kind} {authority_id}")

    def upstream(self, action: str, ski: str) -> None:
        raise AssertionError("no upstream here")


class FakeClock:
    def __init__(self) -> None:
        self.t = NOW
        self.slept: list[float] = []

    def now(self) -> datetime:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += timedelta(seconds=seconds)

    @property
    def clock(self) -> Clock:
        return Clock(self.now, self.sleep)


@pytest.fixture(scope="module")
def local() -> Platform:
    return load_platform("local")


def test_a_rotation_stops_at_the_overlap_and_a_second_run_finishes_it(local: Platform, tmp_path: Path) -> None:
    spire, fake, out = FakeSpire(), FakeClock(), io.StringIO()
    assert rotate(local, spire, "x509", out, state_dir=tmp_path, clock=fake.clock) == 0  # type: ignore[arg-type]
    assert spire.calls == ["prepare x509", "activate x509 x-2"]
    assert fake.slept == [360.0]  # the refresh hint (300s) + a kubelet ConfigMap sync (60s)
    text = out.getvalue()
    assert "waiting    6m for the bundle carrying both" in text
    assert "x-a stays trusted until 2026-12-05T12:21:00Z (15m)" in text  # the longest X.509-SVID TTL
    assert (tmp_path / "local-x509.json").exists()
    # the next day's run: nothing to do on the server, the journal is closed
    fake.t += timedelta(minutes=16)
    again = io.StringIO()
    assert rotate(local, spire, "x509", again, state_dir=tmp_path, clock=fake.clock) == 0  # type: ignore[arg-type]
    assert spire.calls == ["prepare x509", "activate x509 x-2"]
    assert "done: x-2 is active" in again.getvalue()
    assert not (tmp_path / "local-x509.json").exists()


def test_an_interrupted_rotation_resumes_without_preparing_again(local: Platform, tmp_path: Path) -> None:
    spire, fake = FakeSpire(), FakeClock()

    def interrupted(seconds: float) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        rotate(local, spire, "jwt", io.StringIO(), state_dir=tmp_path,  # type: ignore[arg-type]
               clock=Clock(fake.now, interrupted))
    assert spire.calls == ["prepare jwt"]
    fake.t += timedelta(minutes=10)  # past the propagation wait while nobody watched
    out = io.StringIO()
    rotate(local, spire, "jwt", out, state_dir=tmp_path, clock=fake.clock)  # type: ignore[arg-type]
    assert spire.calls == ["prepare jwt", "activate jwt j-2"]
    assert fake.slept == []
    assert "(resumed from" in out.getvalue() and "[done] prepare" in out.getvalue()


def test_dry_run_changes_nothing(local: Platform, tmp_path: Path) -> None:
    spire = FakeSpire()
    out = io.StringIO()
    rotate(local, spire, "x509", out, state_dir=tmp_path, dry_run=True, clock=FakeClock().clock)  # type: ignore[arg-type]
    assert spire.calls == [] and "dry run: nothing was changed" in out.getvalue()
    assert "[next] prepare" in out.getvalue()


def test_compromise_without_yes_only_prints(local: Platform) -> None:
    spire = FakeSpire()
    out = io.StringIO()
    compromise(local, spire, "x-a", out, clock=FakeClock().clock)  # type: ignore[arg-type]
    assert spire.calls == []
    assert "run again with --yes" in out.getvalue() and "at most 15m" in out.getvalue()


def test_compromise_of_the_active_authority_rotates_then_taints_and_revokes(local: Platform) -> None:
    spire, fake, out = FakeSpire(), FakeClock(), io.StringIO()
    compromise(local, spire, "x-a", out, yes=True, clock=fake.clock)  # type: ignore[arg-type]
    assert spire.calls == ["prepare x509", "activate x509 x-2", "taint x509 x-a", "revoke x509 x-a"]
    assert [s.id for s in spire.slots["x509"]] == ["x-2"]  # the replacement is the only, active one
    assert "resigned   all 1 agent(s)" in out.getvalue()


def test_compromise_waits_a_bounded_time_for_agents_then_revokes(local: Platform) -> None:
    spire = FakeSpire(slots={"x509": [Slot("x-b", "active"), Slot("x-a", "old")], "jwt": [Slot("j-a", "active")]},
                      resign_on_taint=False)
    fake, out = FakeClock(), io.StringIO()
    compromise(local, spire, "x-a", out, yes=True, resign_timeout=timedelta(seconds=10),  # type: ignore[arg-type]
               clock=fake.clock)
    assert spire.calls == ["taint x509 x-a", "revoke x509 x-a"]
    assert sum(fake.slept) == pytest.approx(10.0)
    assert "WARNING    1 agent(s) still hold an SVID from before the taint after 10s" in out.getvalue()


def test_unknown_authority_is_one_clear_error(local: Platform) -> None:
    with pytest.raises(CaError, match=r"unknown authority 'x-zz': this server has x-a \(x509 active\), j-a"):
        compromise(local, FakeSpire(), "x-zz", io.StringIO(), yes=True, clock=FakeClock().clock)  # type: ignore[arg-type]


def test_a_stack_without_spire_is_refused(tmp_path: Path) -> None:
    import dataclasses

    base = load_platform("local")
    cfg = base.config.model_copy(update={"subsystems": base.config.subsystems.model_copy(update={"spire": False})})
    platform = dataclasses.replace(base, config=cfg)
    with pytest.raises(CaError, match="stack local has no SPIRE"):
        rotate(platform, FakeSpire(), "x509", io.StringIO(), state_dir=tmp_path)  # type: ignore[arg-type]


def test_status_json_with_the_deployed_roots_and_the_live_server(local: Platform) -> None:
    import json

    from components.ca_runner import status
    from tests.graph.test_ca_overlap_graph import ca_pem

    staging = load_platform("staging")
    bundle = ca_pem("new root") + ca_pem("old root")
    out = io.StringIO()
    with pytest.raises(CaError, match=re.escape("the SPIRE server's trust domain is 'local.agentpassport.internal', "
                                                "not stack staging's 'staging.agents.acme-corp.net'")):
        status(staging, FakeSpire(), out, clock=FakeClock().clock)  # type: ignore[arg-type]
    out = io.StringIO()
    live = FakeSpire(trust_domain="staging.agents.acme-corp.net")
    status(staging, live, out, fmt="json", trust_bundle_pem=bundle, clock=FakeClock().clock)  # type: ignore[arg-type]
    doc = json.loads(out.getvalue())
    layers = [(r["layer"], r["state"]) for r in doc["authorities"]]
    assert layers[:3] == [("root", "deployed"), ("previous-root", "deployed"), ("intermediate", layers[2][1])]
    assert ("spire-x509", "active") in layers and ("spire-jwt", "active") in layers
    assert ("linkerd-anchor", "signs the issuer") in layers
    root = doc["authorities"][0]
    assert root["custody"] == "Vault PKI" and root["not_after"] is not None and root["time_left"] != "-"


def test_rotation_procedures_for_what_is_rotated_by_hand() -> None:
    import contextlib

    from components import cli

    cases = (("staging", "upstream", "rotation of the trust domain's upstream CA (vault-pki)"),
             ("prod", "linkerd", "two-anchor procedure"), ("local", "upstream", None))
    for stack, authority, expected in cases:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(["ca", "rotate", "--stack", stack, "--authority", authority])
        if expected is None:
            assert code == 2 and "has no upstream CA (trust.upstream: spire)" in err.getvalue()
        else:
            assert code == 0 and expected in out.getvalue()
    # every upstream rotation ends with SPIRE's own revocation: dropping previousRoots leaves SPIRE's bundle as is
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["ca", "rotate", "--stack", "staging", "--authority", "upstream"]) == 0
    steps = out.getvalue()
    assert steps.index("remove the old root from trust.previousRoots") < steps.index(
        "upstreamauthority taint, then\n     revoke -subjectKeyID")
    assert "SPIRE keeps an upstream root in its bundle until it expires or is revoked" in steps


def test_a_damaged_journal_is_one_clear_error(local: Platform, tmp_path: Path) -> None:
    (tmp_path / "local-x509.json").write_text("{not json")
    with pytest.raises(CaError, match=r"local-x509.json: not a rotation journal \(JSONDecodeError: .*delete it"):
        rotate(local, FakeSpire(), "x509", io.StringIO(), state_dir=tmp_path)  # type: ignore[arg-type]


@pytest.mark.parametrize("stack", ["local", "dev", "staging", "prod"])
def test_the_drill_server_is_the_rendered_one_with_only_the_laptop_differences(stack: str, tmp_path: Path) -> None:
    from components.ca_drill import throwaway_server_conf
    from components.render import spire as r

    platform = load_platform(stack)
    rendered, drill = r.server_config(platform), throwaway_server_conf(platform, tmp_path)
    moved = {"bind_address", "bind_port", "data_dir", "socket_path", "log_format", "federation"}
    assert {k: v for k, v in drill["server"].items() if k not in moved} == {
        k: v for k, v in rendered["server"].items() if k not in moved}  # TTLs, key type, trust domain, issuer
    assert drill["server"]["bind_address"] == "127.0.0.1" and drill["server"]["socket_path"].startswith(str(tmp_path))
    plugins = drill["plugins"]
    assert set(plugins) == {"DataStore", "KeyManager", "NodeAttestor"}  # no UpstreamAuthority, no Notifier
    assert plugins["NodeAttestor"] == [{"join_token": {"plugin_data": {}}}]
    assert plugins["DataStore"][0]["sql"]["plugin_data"]["database_type"] == "sqlite3"
    assert str(tmp_path) in plugins["KeyManager"][0]["disk"]["plugin_data"]["keys_path"]
    assert drill["health_checks"]["bind_address"] == "127.0.0.1"
    assert drill["telemetry"]["Prometheus"]["host"] == "127.0.0.1"


# --------------------------------------------------------------------------- an interrupted compromise


def _interrupt_at_first_sleep(fake: FakeClock) -> Clock:
    def sleep(seconds: float) -> None:
        raise KeyboardInterrupt  # Ctrl-C during the wait after the taint

    return Clock(fake.now, sleep)


def test_a_compromise_interrupted_after_the_taint_resumes_at_the_wait(local: Platform, tmp_path: Path) -> None:
    spire = FakeSpire(slots={"x509": [Slot("x-b", "active"), Slot("x-a", "old")], "jwt": [Slot("j-a", "active")]},
                      resign_on_taint=False)
    fake = FakeClock()
    with pytest.raises(KeyboardInterrupt):
        compromise(local, spire, "x-a", io.StringIO(), yes=True, state_dir=tmp_path,  # type: ignore[arg-type]
                   clock=_interrupt_at_first_sleep(fake))
    assert spire.calls == ["taint x509 x-a"]
    assert (tmp_path / "local-compromise-x-a.json").exists()
    out = io.StringIO()
    compromise(local, spire, "x-a", out, yes=True, state_dir=tmp_path, resign_timeout=timedelta(seconds=10),  # type: ignore[arg-type]
               clock=fake.clock)
    text = out.getvalue()
    assert "no agent SVIDs to wait for" not in text
    assert "snapshot of 1 agent SVID(s)" in text
    assert "WARNING    1 agent(s) still hold an SVID from before the taint after 10s: spiffe://td/agent/1" in text
    assert spire.calls == ["taint x509 x-a", "revoke x509 x-a"] and sum(fake.slept) == pytest.approx(10.0)
    assert not (tmp_path / "local-compromise-x-a.json").exists()


def test_an_already_tainted_authority_without_a_snapshot_waits_the_whole_timeout(local: Platform,
                                                                                tmp_path: Path) -> None:
    spire = FakeSpire(slots={"x509": [Slot("x-b", "active"), Slot("x-a", "old", tainted=True)],
                             "jwt": [Slot("j-a", "active")]})
    fake, out = FakeClock(), io.StringIO()
    compromise(local, spire, "x-a", out, yes=True, state_dir=tmp_path, resign_timeout=timedelta(minutes=3),  # type: ignore[arg-type]
               clock=fake.clock)
    assert fake.slept == [180.0] and spire.calls == ["revoke x509 x-a"]
    assert "(the whole --timeout): the authority was already tainted" in out.getvalue()


@dataclass
class UpstreamSpire(FakeSpire):
    """Signs under an upstream root that is in the bundle (aws-pca / tls signing SPIRE's CA directly):
    x-b (active) under up-new, x-a (old) under up-old. Tainting an upstream twice is refused, as
    spire-server 1.15.3 refuses it ("root CA is already tainted")."""

    upstream_tainted: set[str] = field(default_factory=set)
    visible_roots: bool = True

    def state(self) -> ServerState:
        slots = (LocalAuthority("x509", "x-b", "active", upstream_ski="up-new"),
                 LocalAuthority("x509", "x-a", "old", upstream_ski="up-old"))
        roots = tuple(LocalAuthority("x509", r, "bundle", tainted=r in self.upstream_tainted, in_bundle=True)
                      for r in ("up-old", "up-new")) if self.visible_roots else ()
        return ServerState(self.trust_domain, slots + roots, 300)

    def upstream(self, action: str, ski: str) -> None:
        if action == "taint":
            if ski in self.upstream_tainted:
                raise CaError("spire-server upstreamauthority taint: rpc error: root CA is already tainted")
            self.upstream_tainted.add(ski)
        self.calls.append(f"upstream {action} {ski}")


@pytest.mark.parametrize("visible_roots", [True, False])
def test_an_interrupted_upstream_compromise_does_not_taint_again(local: Platform, tmp_path: Path,
                                                                 visible_roots: bool) -> None:
    spire = UpstreamSpire(resign_on_taint=False, visible_roots=visible_roots)
    fake = FakeClock()
    with pytest.raises(KeyboardInterrupt):
        compromise(local, spire, "up-old", io.StringIO(), yes=True, state_dir=tmp_path,  # type: ignore[arg-type]
                   clock=_interrupt_at_first_sleep(fake))
    assert spire.calls == ["upstream taint up-old"]
    out = io.StringIO()
    compromise(local, spire, "up-old", out, yes=True, state_dir=tmp_path,  # type: ignore[arg-type]
               resign_timeout=timedelta(seconds=10), clock=fake.clock)
    assert spire.calls == ["upstream taint up-old", "upstream revoke up-old"]
    assert "snapshot of 1 agent SVID(s)" in out.getvalue() and "WARNING    1 agent(s)" in out.getvalue()


# --------------------------------------------------------------------------- several server replicas


def test_with_replicas_each_server_socket_has_its_own_journal_and_the_command_says_so(local: Platform,
                                                                                     tmp_path: Path) -> None:
    import dataclasses

    spire_cfg = local.config.spire.model_copy(update={"replicas": 3})
    three = dataclasses.replace(local, config=local.config.model_copy(update={"spire": spire_cfg}))
    pods = [FakeSpire(socket=f"/run/pod-{i}/api.sock") for i in range(2)]
    outs = [io.StringIO(), io.StringIO()]
    for spire, out in zip(pods, outs, strict=True):
        rotate(three, spire, "x509", out, state_dir=tmp_path, clock=FakeClock().clock)  # type: ignore[arg-type]
        assert spire.calls == ["prepare x509", "activate x509 x-2"]  # the second pod did not adopt the first's journal
    journals = sorted(p.name for p in tmp_path.iterdir())
    assert len(journals) == 2 and all(re.fullmatch(r"local-x509-[0-9a-f]{10}\.json", j) for j in journals)
    assert outs[0].getvalue().startswith("note: stack local runs 3 SPIRE server replicas, each with its own X.509 CA "
                                         "and JWT key")
    assert "run `passport ca rotate` against each server pod's socket (--spire-server-socket)" in outs[0].getvalue()
    single = io.StringIO()
    rotate(local, FakeSpire(), "jwt", single, state_dir=tmp_path, dry_run=True, clock=FakeClock().clock)  # type: ignore[arg-type]
    assert "replicas" not in single.getvalue()
