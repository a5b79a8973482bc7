"""environment.yml (conda) and pyproject.toml (pip) must pin the same packages and versions."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib
import yaml  # PyYAML, installed with jupyter (jupyter_events requires it)

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;]+)$")


def normalise(name: str) -> str:
    """PEP 503 name: case and runs of - _ . do not matter."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(requirements: list[str], where: str) -> dict[str, str]:
    """``{name: version}`` from ``name==version`` lines; anything unpinned is an error."""
    out = {}
    for req in requirements:
        m = PIN.match(req.strip())
        assert m, f"{where}: {req!r} is not pinned as name==version"
        name = normalise(m.group(1))
        assert name not in out, f"{where}: {name} listed twice"
        out[name] = m.group(3)
    return out


def pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def environment():
    return yaml.safe_load((ROOT / "environment.yml").read_text())


def split_environment(env):
    """``(conda specs, pip lines)`` of environment.yml."""
    conda, pip = [], []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            assert list(dep) == ["pip"], f"unexpected section {list(dep)} in environment.yml"
            pip.extend(dep["pip"])
        else:
            conda.append(str(dep))
    return conda, pip


def test_pip_pins_equal_pyproject_pins():
    project = pyproject()["project"]
    wanted = pins(project["dependencies"], "pyproject dependencies")
    wanted_dev = pins(project["optional-dependencies"]["dev"], "pyproject dev extra")
    assert not set(wanted) & set(wanted_dev), "a package is both a dependency and a dev extra"
    wanted.update(wanted_dev)
    wanted_site = pins(project["optional-dependencies"]["site"], "pyproject site extra")
    assert not set(wanted) & set(wanted_site), "a package is both in the site extra and elsewhere"
    wanted.update(wanted_site)
    wanted_doge = pins(project["optional-dependencies"]["doge"], "pyproject doge extra")
    assert not set(wanted) & set(wanted_doge), "a package is both in the doge extra and elsewhere"
    wanted.update(wanted_doge)

    _, pip = split_environment(environment())
    editable = [line for line in pip if line.startswith("-e")]
    got = pins([line for line in pip if not line.startswith("-e")], "environment.yml pip")
    assert got == wanted, {
        "only in environment.yml": sorted(set(got) - set(wanted)),
        "only in pyproject.toml": sorted(set(wanted) - set(got)),
        "different versions": {n: (got[n], wanted[n]) for n in set(got) & set(wanted) if got[n] != wanted[n]},
    }
    # The environment installs the repository itself, with the extras CI installs.
    assert editable == ["-e .[dev,doge]"]


def test_conda_part_is_python_311_and_pip_only():
    conda, _ = split_environment(environment())
    assert sorted(conda) == ["pip", "python=3.11"]
    # 3.11 satisfies pyproject's requires-python (a lower bound, ">=3.X").
    m = re.fullmatch(r">=\s*3\.(\d+)", pyproject()["project"]["requires-python"].strip())
    assert m and int(m.group(1)) <= 11


def test_torch_and_triton_pins_follow_design():
    # DESIGN.md section 8: torch 2.13.0 is the local CPU wheel; triton 3.6.0 needs numpy < 2.4.
    wanted = pins(pyproject()["project"]["dependencies"], "pyproject dependencies")
    assert wanted["torch"] == "2.13.0" and wanted["triton"] == "3.6.0"
    major, minor = (int(x) for x in wanted["numpy"].split(".")[:2])
    assert (major, minor) < (2, 4)
