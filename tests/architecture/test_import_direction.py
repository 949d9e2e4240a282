"""The map in docs/architecture.md, enforced: every import (at the top of a module or inside a
function) runs downward between the rooms, and the two toolkits stay where they belong."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.paths import REPO_ROOT

ROOT = REPO_ROOT
PRODUCT = ("firmware_bridge", "sim", "profiles", "controller")

# Each room, and the rooms it may import (besides itself). Longest prefix wins.
ALLOWED: dict[str, set[str]] = {
    # A package's own __init__ imports nothing of ours.
    "firmware_bridge": set(),
    "controller": set(),
    "firmware_bridge.clock": set(),
    "firmware_bridge.errors": set(),
    "firmware_bridge.codec": set(),
    "firmware_bridge.messages": {"firmware_bridge.codec"},
    "firmware_bridge.units": {"firmware_bridge.messages"},
    "firmware_bridge.session": {"firmware_bridge.codec", "firmware_bridge.messages", "firmware_bridge.units"},
    "firmware_bridge.transport": {"firmware_bridge.errors"},
    "firmware_bridge.link": {"firmware_bridge.clock", "firmware_bridge.errors", "firmware_bridge.codec", "firmware_bridge.messages",
                             "firmware_bridge.units", "firmware_bridge.session", "firmware_bridge.transport"},
    "firmware_bridge.conformance": {"firmware_bridge"},
    "sim": {"firmware_bridge.clock", "firmware_bridge.codec", "firmware_bridge.messages", "firmware_bridge.units"},
    "profiles": set(),
    "controller.errors": set(),
    "controller.config": {"controller.errors", "profiles.schema"},
    "controller.records": {"controller.errors", "controller.config", "firmware_bridge", "profiles", "controller.records.keystore",
                           "controller.records.personal", "controller.records.events"},
    "controller.records.events": {"controller.errors", "controller.records.certainty"},
    # The patients' keys and the personal fields' crypto know nothing of the record they protect.
    "controller.records.keystore": {"controller.errors"},
    "controller.records.personal": {"controller.records.keystore"},
    "controller.procedure": {"controller.errors", "controller.config", "controller.records", "firmware_bridge", "profiles"},
    "controller.practice": {"controller.errors", "controller.config", "controller.records", "profiles"},
    "controller.device": {"controller.errors", "controller.config", "controller.records", "controller.procedure", "firmware_bridge",
                          "profiles"},
    "controller.clinic": {"controller.errors", "controller.config", "controller.records", "controller.procedure", "controller.practice",
                          "controller.device", "firmware_bridge", "profiles"},
    # The UI reads Clinic and the wire's types; it never opens or lists a port (no transport, no conformance).
    "controller.tui": {"controller.errors", "controller.config", "controller.records", "controller.procedure", "controller.practice",
                       "controller.device", "controller.clinic", "firmware_bridge.clock", "firmware_bridge.errors",
                       "firmware_bridge.messages", "firmware_bridge.units", "firmware_bridge.session", "firmware_bridge.link", "profiles"},
    "controller.cli": {"controller", "firmware_bridge", "profiles", "sim"},
    "bench": {"controller", "firmware_bridge", "profiles", "sim"},
}
# Third-party toolkits with one owner each.
OWNERS = {"serial": "firmware_bridge.transport", "textual": "controller.tui"}


def modules() -> Iterator[tuple[str, Path]]:
    for package in (*PRODUCT, "bench"):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def imports(path: Path) -> Iterator[tuple[int, str]]:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            submodules = [f"{node.module}.{alias.name}" for alias in node.names if is_module(f"{node.module}.{alias.name}")]
            if len(submodules) < len(node.names):  # names defined in the module itself
                yield node.lineno, node.module
            yield from ((node.lineno, name) for name in submodules)  # `from package import module`


def is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def room_of(module: str) -> str | None:
    matches = [room for room in ALLOWED if module == room or module.startswith(room + ".")]
    return max(matches, key=len) if matches else None


def within(module: str, rooms: set[str]) -> bool:
    return any(module == room or module.startswith(room + ".") for room in rooms)


def is_ours(name: str) -> bool:
    return name.partition(".")[0] in (*PRODUCT, "bench")


def test_every_module_has_a_room() -> None:
    assert [m for m, _ in modules() if room_of(m) is None] == []


def test_a_new_module_falls_in_its_package_room_until_the_map_names_it() -> None:
    """A module nobody put on the map may import nothing of ours: it cannot slip an upward arrow in."""
    assert room_of("firmware_bridge.newcomer") == "firmware_bridge" and ALLOWED["firmware_bridge"] == set()


def test_an_upward_import_inside_a_function_is_caught(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("def f() -> None:\n    from controller.tui import app\n")
    assert (2, "controller.tui.app") in set(imports(source))


@pytest.mark.parametrize(("module", "path"), list(modules()), ids=lambda v: v if isinstance(v, str) else "")
def test_imports_run_downward(module: str, path: Path) -> None:
    room = room_of(module)
    assert room is not None
    upward = []
    for line, name in imports(path):
        target = room_of(name)
        if not is_ours(name) or target is None or target == room or within(name, ALLOWED[room]):
            continue
        upward.append(f"{path.relative_to(ROOT)}:{line} imports {name} ({room} -> {target})")
    assert upward == []


@pytest.mark.parametrize(("toolkit", "owner"), sorted(OWNERS.items()))
def test_a_toolkit_is_imported_by_its_owner_only(toolkit: str, owner: str) -> None:
    """bench/ and tests/ drive the UI from above and may use textual; no product room may."""
    offenders = [f"{path.relative_to(ROOT)}:{line}" for module, path in modules() if module.split(".")[0] in PRODUCT
                 and not within(module, {owner}) for line, name in imports(path) if name.split(".")[0] == toolkit]
    assert offenders == []
