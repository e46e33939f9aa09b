"""requirements/*.txt (written by scripts/lock) pin everything pyproject.toml asks for, with hashes."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def _pins(lock: Path) -> dict[str, tuple[str, int]]:
    """``{name: (version, number of hashes)}`` of every pinned requirement in ``lock``."""
    pins: dict[str, tuple[str, int]] = {}
    name = ""
    for line in lock.read_text().splitlines():
        if m := PIN.match(line):
            name = canonicalize_name(m.group(1))
            assert name not in pins, f"{lock.name}: {name} pinned twice"
            pins[name] = (m.group(2), 0)
        elif line.strip().startswith("--hash=sha256:") and name:
            version, hashes = pins[name]
            pins[name] = (version, hashes + 1)
        elif line.strip() and not line.lstrip().startswith("#"):
            raise AssertionError(f"{lock.name}: unexpected line {line!r}")
    return pins


def _wanted(*extras: str) -> list[Requirement]:
    """pyproject.toml's dependencies plus those of ``extras`` (the project's own name expanded)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    optional = project["optional-dependencies"]
    todo, seen, out = list(extras), set(), [Requirement(r) for r in project["dependencies"]]
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for req in map(Requirement, optional[extra]):
            if canonicalize_name(req.name) == canonicalize_name(project["name"]):
                todo += sorted(req.extras)
            else:
                out.append(req)
    build = [Requirement(line) for line in (ROOT / "requirements" / "build.in").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    return out + build


def _assert_covers(lock: Path, wanted: list[Requirement]) -> dict[str, tuple[str, int]]:
    pins = _pins(lock)
    for req in wanted:
        name = canonicalize_name(req.name)
        assert name in pins, f"{req} is not in {lock.name}: run scripts/lock"
        assert req.specifier.contains(pins[name][0], prereleases=True), \
            f"{lock.name} pins {name}=={pins[name][0]}, pyproject.toml wants {req}: run scripts/lock"
    unhashed = sorted(name for name, (_, hashes) in pins.items() if hashes == 0)
    assert unhashed == [], f"{lock.name}: pins without a hash"
    return pins


def test_serve_lock_pins_the_package_and_its_extras_with_hashes() -> None:
    pins = _assert_covers(ROOT / "requirements" / "serve.txt", _wanted("all"))
    assert "packaging" in pins  # gunicorn's gevent worker imports it (gunicorn[gevent])
    assert not {"pytest", "hypothesis", "moto", "ruff", "mypy"} & set(pins)  # no test tools


def test_test_lock_is_the_serve_lock_plus_test_and_dev_tools() -> None:
    serve = _pins(ROOT / "requirements" / "serve.txt")
    test = _assert_covers(ROOT / "requirements" / "test.txt", _wanted("all", "test", "dev"))
    assert {n: test.get(n, ("missing", 0))[0] for n in serve} == {n: v for n, (v, _) in serve.items()}


def test_pip_lock_pins_pip_with_hashes() -> None:
    pins = _assert_covers(ROOT / "requirements" / "pip.txt", [Requirement("pip>=24")])
    assert set(pins) == {"pip"}


def test_pin_parser_counts_hashes_and_refuses_stray_lines(tmp_path: Path) -> None:
    lock = tmp_path / "x.txt"
    lock.write_text("# c\na==1 ; sys_platform == 'win32' \\\n    --hash=sha256:00 \\\n    --hash=sha256:11\n"
                    "    # via b\nb==2\n")
    assert _pins(lock) == {"a": ("1", 2), "b": ("2", 0)}
    lock.write_text("a>=1\n")
    try:
        _pins(lock)
    except AssertionError as exc:
        assert "unexpected line" in str(exc)
    else:
        raise AssertionError("an unpinned line was accepted")
