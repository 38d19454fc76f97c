"""Every deliberately broken manifest fails with its file, the field and a useful reason."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from components.config import load_stack_config
from components.errors import PassportError
from components.manifest.loader import load_manifests
from components.platform_model import build_platform

BAD = Path(__file__).parents[1] / "fixtures" / "bad"
FIXTURES = sorted(BAD.glob("*.yaml"))


def _expectation(path: Path) -> tuple[str, str]:
    head = path.read_text(encoding="utf-8").splitlines()[:2]
    field = re.sub(r"^# expect-field: ?", "", head[0])
    message = re.sub(r"^# expect: ?", "", head[1])
    return field, message


def test_there_are_at_least_twenty_broken_manifests() -> None:
    assert len(FIXTURES) >= 20


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_broken_manifest_is_reported_with_file_and_field(path: Path) -> None:
    field, message = _expectation(path)
    shown = str(path.relative_to(Path.cwd()))
    def load() -> None:
        manifests = load_manifests([path, Path("agents/services.yaml")])
        build_platform(load_stack_config("dev"), manifests, "dev", "stacks/Pulumi.dev.yaml")

    with pytest.raises(PassportError) as info:
        load()
    problems = [p for p in info.value.problems if p.file == shown]
    assert problems, f"no problem names {shown}: {info.value.report()}"
    matching = [p for p in problems if p.field == field and message in p.message]
    assert matching, f"expected {field!r} / {message!r}, got:\n{info.value.report()}"
    assert matching[0].line is not None and matching[0].line > 2
    # the one-line form a user sees: file:line: field: reason
    assert str(matching[0]).startswith(f"{shown}:{matching[0].line}:")


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    for name in ("04-bad-duration", "10-bad-name", "13-bad-method"):
        (tmp_path / f"{name}.yaml").write_text((BAD / f"{name}.yaml").read_text())
    with pytest.raises(PassportError) as info:
        load_manifests([tmp_path])
    files = {Path(p.file).name for p in info.value.problems}
    assert files == {"04-bad-duration.yaml", "10-bad-name.yaml", "13-bad-method.yaml"}
    # 10-bad-name uses the bad name twice (metadata.name and serviceAccount): both reported
    assert info.value.report().splitlines()[-1] == "4 problems found in agent manifests"
