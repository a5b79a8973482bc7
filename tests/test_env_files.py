"""pyproject.toml declares compatible ranges; constraints.txt pins the exact versions `make` and CI
install; environment.yml (conda) pins the same as constraints.txt. The three must agree."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib
import yaml  # PyYAML, installed with jupyter (jupyter_events requires it)
from packaging.requirements import Requirement
from packaging.version import Version

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


def declared() -> dict[str, Requirement]:
    """Every requirement of pyproject.toml (dependencies and all extras), by normalised name."""
    project = pyproject()["project"]
    groups = {"dependencies": project["dependencies"], **project["optional-dependencies"]}
    out: dict[str, Requirement] = {}
    for group, reqs in groups.items():
        for line in reqs:
            req = Requirement(line)
            name = normalise(req.name)
            assert name not in out, f"pyproject: {name} listed twice (again in {group})"
            out[name] = req
    return out


def constraints() -> dict[str, str]:
    lines = [line.split("#")[0].strip() for line in (ROOT / "constraints.txt").read_text().splitlines()]
    return pins([line for line in lines if line], "constraints.txt")


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


def test_pyproject_declares_ranges_not_pins():
    # A pin (==) in the package's requirements makes pip replace a machine's own torch.
    for name, req in declared().items():
        assert req.specifier, f"pyproject: {name} has no version range"
        assert not any(spec.operator in ("==", "===") for spec in req.specifier), (
            f"pyproject: {name} is pinned ({req.specifier}); pins belong in constraints.txt")
    for name in ("torch", "triton", "numpy"):
        assert any(spec.operator == ">=" for spec in declared()[name].specifier), name


def test_constraints_pin_every_requirement_inside_its_range():
    wanted, got = declared(), constraints()
    assert set(got) == set(wanted), {"only in constraints.txt": sorted(set(got) - set(wanted)),
                                     "only in pyproject.toml": sorted(set(wanted) - set(got))}
    for name, version in got.items():
        assert wanted[name].specifier.contains(version, prereleases=True), (
            f"constraints.txt pins {name}=={version}, outside pyproject's {wanted[name].specifier}")


def test_environment_pins_equal_constraints():
    _, pip = split_environment(environment())
    editable = [line for line in pip if line.startswith("-e")]
    got = pins([line for line in pip if not line.startswith("-e")], "environment.yml pip")
    wanted = constraints()
    assert got == wanted, {
        "only in environment.yml": sorted(set(got) - set(wanted)),
        "only in constraints.txt": sorted(set(wanted) - set(got)),
        "different versions": {n: (got[n], wanted[n]) for n in set(got) & set(wanted) if got[n] != wanted[n]},
    }
    # The environment installs the repository itself, with the extras CI installs.
    assert editable == ["-e .[dev,doge]"]


def test_make_installs_with_the_constraints():
    makefile = (ROOT / "Makefile").read_text()
    installs = re.findall(r"pip install[^\n]*", makefile)
    assert installs and all("-c constraints.txt" in line for line in installs), installs
    assert re.search(r"^\$\(STAMP\):.*constraints\.txt", makefile, re.MULTILINE), "the stamp must depend on it"


def test_conda_part_is_python_311_and_pip_only():
    conda, _ = split_environment(environment())
    assert sorted(conda) == ["pip", "python=3.11"]
    # 3.11 satisfies pyproject's requires-python (a lower bound, ">=3.X").
    m = re.fullmatch(r">=\s*3\.(\d+)", pyproject()["project"]["requires-python"].strip())
    assert m and int(m.group(1)) <= 11


def test_torch_and_triton_pins_follow_design():
    # torch 2.13.0 is the local CPU wheel; triton 3.6.0's CPU interpreter needs numpy < 2.4.
    wanted = constraints()
    assert wanted["torch"] == "2.13.0" and wanted["triton"] == "3.6.0"
    assert Version(wanted["numpy"]) < Version("2.4")
