"""pyproject.toml: the installable packages and the extras match the requirements files (pip install .[edge] etc.)."""
from __future__ import annotations

import re
import tomllib

from conftest import REPO

PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def pins(path) -> dict[str, str]:
    out = {}
    for line in (REPO / path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, spec = re.match(r"([A-Za-z0-9_.\-\[\]]+)\s*(.*)", line).groups()
            out[name.lower()] = spec
    return out


def test_packages_exist_and_extras_are_the_requirements_files():
    for package in PROJECT["tool"]["setuptools"]["packages"]:
        assert (REPO / package / "__init__.py").is_file()
    extras = PROJECT["tool"]["setuptools"]["dynamic"]["optional-dependencies"]
    assert set(extras) == {"train", "edge", "pc", "jetson"}
    assert extras["train"]["file"] == ["requirements.txt"]
    assert extras["edge"]["file"] == ["requirements-edge.txt"]
    assert extras["pc"]["file"] == ["requirements-pc.txt"]
    assert extras["jetson"]["file"] == ["requirements-edge.txt", "requirements-jetson.txt"]
    for files in extras.values():
        for f in files["file"]:
            assert pins(f), f


def test_core_dependencies_are_pinned_as_on_every_side():
    core = {re.match(r"[A-Za-z0-9_.\-]+", d).group(0).lower(): d for d in PROJECT["project"]["dependencies"]}
    for side in ("requirements.txt", "requirements-edge.txt", "requirements-pc.txt"):
        side_pins = pins(side)
        for name, dep in core.items():
            assert name in side_pins and dep == name + side_pins[name], (side, dep)
