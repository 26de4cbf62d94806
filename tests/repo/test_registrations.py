"""The registrations people forget when they add a service."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = sorted(p.name for p in (ROOT / "services").iterdir() if (p / "pyproject.toml").exists())

pytestmark = pytest.mark.unit


def test_there_are_six_services() -> None:
    assert (
        sorted(["gateway", "reconciler", "mail-connector", "crm-connector", "mapping", "linker"])
        == SERVICES
    )


def _workspace_members() -> list[Path]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    members: list[Path] = []
    for pattern in config["tool"]["uv"]["workspace"]["members"]:
        members.extend(p for p in ROOT.glob(pattern) if (p / "pyproject.toml").exists())
    return members


@pytest.mark.parametrize("service", SERVICES)
def test_service_is_a_workspace_member(service: str) -> None:
    assert ROOT / "services" / service in _workspace_members()


@pytest.mark.parametrize("service", SERVICES)
def test_service_is_started_by_make_up(service: str) -> None:
    from concord_devstack.stack import SERVICES as STARTED

    assert service in STARTED


@pytest.mark.parametrize("service", SERVICES)
def test_service_has_dockerfile_and_k8s_base(service: str) -> None:
    assert (ROOT / "services" / service / "Dockerfile").is_file()
    assert (ROOT / "deploy" / "k8s" / "base" / service / "kustomization.yaml").is_file()


@pytest.mark.parametrize("service", SERVICES)
def test_service_has_an_entry_point_and_no_cross_service_imports(service: str) -> None:
    package = "concord_" + service.replace("-", "_")
    src = ROOT / "services" / service / "src" / package
    assert (src / "__main__.py").is_file()
    others = {"concord_" + s.replace("-", "_") for s in SERVICES} - {package}
    pattern = re.compile(r"^\s*(?:from|import)\s+(" + "|".join(sorted(others)) + r")\b", re.M)
    offenders = [
        str(path.relative_to(ROOT))
        for path in src.rglob("*.py")
        if pattern.search(path.read_text())
    ]
    assert offenders == [], f"services must not import each other: {offenders}"


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make up" in readme.split("\n\n")[1]
    assert "make test" in readme.split("\n\n")[1]
    assert re.search(r"^make test$", (ROOT / ".ci" / "run").read_text(), re.M)


def test_every_member_src_is_type_checked() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    checked = set(config["tool"]["mypy"]["mypy_path"])
    sources = {
        str(m.relative_to(ROOT) / "src") for m in _workspace_members() if (m / "src").is_dir()
    }
    assert sources - checked == set(), "add these to [tool.mypy] mypy_path"
