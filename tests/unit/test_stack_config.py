"""Stack configuration: the three example stacks load; strict stacks refuse unsafe settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from components.config import is_placeholder_domain, list_stacks, load_stack_config
from components.errors import ConfigError


def test_example_stacks() -> None:
    assert list_stacks() == ["dev", "local", "prod", "prod-base", "prod-shard-0", "prod-shard-1", "staging"]
    dev, prod = load_stack_config("dev"), load_stack_config("prod")
    assert not dev.is_strict and prod.is_strict
    assert (dev.trust.upstream, dev.spire.datastore, dev.kubernetes.mode) == ("tls", "sqlite3", "render")
    assert (prod.trust.upstream, prod.spire.datastore, prod.spire.replicas) == ("aws-pca", "postgres", 3)
    assert dev.subsystems.aws is False and prod.subsystems.aws is True
    assert prod.jwt_issuer == "https://oidc-discovery.prod.agents.acme-corp.net"
    local = load_stack_config("local")
    assert (local.trust.upstream, local.mesh.anchor_custody, local.kubernetes.mode) == ("spire", None, "cluster")
    assert local.subsystems.vault is False and local.kubernetes.skip_await
    assert not local.spire.controller_manager_webhook


def _stack(tmp_path: Path, name: str, body: str) -> Path:
    (tmp_path / "stacks").mkdir(exist_ok=True)
    (tmp_path / "stacks" / f"Pulumi.{name}.yaml").write_text(body)
    return tmp_path


PROD_OK = """config:
  aws:region: us-east-1
  agent-passport:trustDomain: prod.agents.acme-corp.net
  agent-passport:trust: {upstream: aws-pca}
  agent-passport:spire: {datastore: postgres, replicas: 2, datastoreConnectionSecret: spireDb}
  agent-passport:windows: {domain: corp.acme-corp.net}
  agent-passport:vault: {address: 'https://vault.prod.acme-corp.net:8200'}
  agent-passport:spireDb:
    secure: v1:AAAA
"""


def test_strict_stack_accepts_real_settings_and_ignores_provider_keys(tmp_path: Path) -> None:
    cfg = load_stack_config("prod", _stack(tmp_path, "prod", PROD_OK))
    assert cfg.environment == "prod" and cfg.spire.datastore_connection_secret == "spireDb"


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        (("prod.agents.acme-corp.net", "agents.example.org"), "agent-passport:trustDomain", "placeholder"),
        (("upstream: aws-pca", "upstream: tls"), "agent-passport:trust.upstream", "Pulumi state"),
        (("replicas: 2", "replicas: 1"), "agent-passport:spire.replicas", "highly available"),
        (("datastore: postgres", "datastore: sqlite3"), "agent-passport:spire.replicas", "postgres"),
        (("trust: {upstream: aws-pca}",
          "trust: {upstream: aws-pca}\n  agent-passport:mesh: {defaultInboundPolicy: all-unauthenticated}"),
         "agent-passport:mesh.defaultInboundPolicy", "unauthenticated"),
        (("replicas: 2,", "replicas: 2, caTtl: 1h,"), "agent-passport:spire.defaultX509SvidTtl", "caTtl/6"),
        (("spireDb:\n    secure", "otherKey:\n    secure"),
         "agent-passport:spire.datastoreConnectionSecret", "not set"),
        (("trust: {upstream: aws-pca}", "trust: {upstream: aws-pca, rootLifetime: forever}"),
         "agent-passport:trust.rootLifetime", "not a duration"),
        (("trust: {upstream: aws-pca}", "trust: {upstream: aws-pca, rootLifetim: 10d}"),
         "agent-passport:trust.rootLifetim", "did you mean 'rootLifetime'"),
        (("prod.agents.acme-corp.net", "spiffe://prod.acme-corp.net"),
         "agent-passport:trustDomain", "not a SPIFFE trust domain"),
        (("domain: corp.acme-corp.net", "domain: corp.example.com"), "agent-passport:windows.domain", "placeholder"),
        (("https://vault.prod", "http://vault.prod"), "agent-passport:vault.address", "is not https"),
        (("8200'}", "8200', databases: {main: {engine: postgres, host: db, port: 5432, username: v, "
                   "passwordSecret: spireDb, tls: false}}}"),
         "agent-passport:vault.databases.main.tls", "require TLS"),
    ],
)
def test_strict_stack_refuses(tmp_path: Path, change: tuple[str, str], field: str, reason: str) -> None:
    root = _stack(tmp_path, "prod", PROD_OK.replace(*change))
    with pytest.raises(ConfigError) as info:
        load_stack_config("prod", root)
    hits = [p for p in info.value.problems if p.field == field and reason in p.message]
    assert hits, info.value.report()
    assert hits[0].file == "stacks/Pulumi.prod.yaml"


def test_dev_may_use_tls_and_sqlite(tmp_path: Path) -> None:
    body = "config:\n  agent-passport:trustDomain: dev.acme.internal\n"
    cfg = load_stack_config("dev", _stack(tmp_path, "dev", body))
    assert cfg.trust.upstream == "tls" and not cfg.is_strict


def test_contradicting_lifetimes(tmp_path: Path) -> None:
    body = ("config:\n  agent-passport:trustDomain: dev.acme.internal\n"
            "  agent-passport:trust: {rootLifetime: 30d, intermediateLifetime: 60d}\n")
    with pytest.raises(ConfigError, match="must be shorter than rootLifetime"):
        load_stack_config("dev", _stack(tmp_path, "dev", body))


def test_unknown_stack_lists_known_ones() -> None:
    known = "dev, local, prod, prod-base, prod-shard-0, prod-shard-1, staging"
    with pytest.raises(ConfigError, match=rf"stacks found: {known}"):
        load_stack_config("qa")


@pytest.mark.parametrize("domain", ["example.org", "agents.example.com", "changeme.acme.io", "localhost"])
def test_placeholders(domain: str) -> None:
    assert is_placeholder_domain(domain)


def test_real_domains_are_not_placeholders() -> None:
    assert not is_placeholder_domain("prod.agents.acme-corp.net")
