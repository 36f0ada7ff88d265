"""The public names of sheepblk.proto and sheepblk.client, and the layering
rules of DESIGN.md, checked as trio checks its exports.

Every name a package exports is in `__all__`, importable and documented;
nothing public sits in the package namespace without being exported.
`proto/` imports nothing of the project; `client/` only `proto/` and the
standard library (nbdkit runs it under Debian's python3); the frontends
(dog, sheepfs, the nbdkit plugin) never import the daemon or the store.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["sheepblk.proto", "sheepblk.client"]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_matches_the_public_namespace(name: str) -> None:
    mod = importlib.import_module(name)
    exported = list(mod.__all__)
    assert len(exported) == len(set(exported)), "duplicates in __all__"
    assert exported == sorted(exported, key=str.lower) or exported == sorted(exported)
    public = {n for n, v in vars(mod).items()
              if not n.startswith("_") and not isinstance(v, types.ModuleType)
              and n != "annotations"}
    assert public == set(exported)


@pytest.mark.parametrize("name", PACKAGES)
def test_every_export_is_documented_and_ours(name: str) -> None:
    mod = importlib.import_module(name)
    for export in mod.__all__:
        obj = getattr(mod, export)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__module__.startswith(name + "."), (export, obj.__module__)
            assert (obj.__doc__ or "").strip(), f"{name}.{export} has no docstring"


def _imports(path: Path) -> list[tuple[int, str]]:
    """(level, module) for every import in a file; level > 0 is relative."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(0, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            out.append((node.level, node.module or ""))
    return out


def _absolute(path: Path, level: int, module: str) -> str:
    if not level:
        return module
    parts = path.relative_to(ROOT).with_suffix("").parts
    base = parts[:len(parts) - level]
    return ".".join(base + ((module,) if module else ()))


def _files(rel: str) -> list[Path]:
    p = ROOT / rel
    return sorted(p.rglob("*.py")) if p.is_dir() else [p]


def test_proto_imports_only_itself_and_the_standard_library() -> None:
    for path in _files("sheepblk/proto"):
        for level, module in _imports(path):
            target = _absolute(path, level, module)
            top = target.split(".")[0]
            assert target.startswith("sheepblk.proto") or top in sys.stdlib_module_names, \
                f"{path.relative_to(ROOT)} imports {target}"


# The one client module for trio code (sheepfs): nothing else in the client
# imports it, so nbdkit's embedded Python, which has no trio, never does.
TRIO_CLIENT = "sheepblk/client/aio.py"


def test_client_imports_only_proto_and_the_standard_library() -> None:
    for path in _files("sheepblk/client"):
        trio_ok = path.relative_to(ROOT).as_posix() == TRIO_CLIENT
        for level, module in _imports(path):
            target = _absolute(path, level, module)
            top = target.split(".")[0]
            ok = (target.startswith(("sheepblk.client", "sheepblk.proto"))
                  or top in sys.stdlib_module_names or (trio_ok and top == "trio"))
            assert ok, f"{path.relative_to(ROOT)} imports {target}"
            assert target != "sheepblk.client.aio", \
                f"{path.relative_to(ROOT)} imports the trio client"


@pytest.mark.parametrize("frontend", ["cli/dog", "cli/sheepfs.py", "sheepblk/nbd_plugin.py",
                                      "sheepblk/fs"])
def test_frontends_never_import_the_daemon_or_the_store(frontend: str) -> None:
    for path in _files(frontend):
        for level, module in _imports(path):
            target = _absolute(path, level, module)
            assert not target.startswith(("sheepblk.server", "sheepblk.store")), \
                f"{path.relative_to(ROOT)} imports {target}"


def test_dog_imports_no_daemon_store_or_cluster_module() -> None:
    for path in _files("cli/dog"):
        for level, module in _imports(path):
            target = _absolute(path, level, module)
            assert not target.startswith(("sheepblk.server", "sheepblk.store",
                                          "sheepblk.cluster")), \
                f"{path.relative_to(ROOT)} imports {target}"


def test_only_the_daemon_imports_the_node() -> None:
    """The gateway, recovery, repair and the ops see the node as a
    NodeContext and the cluster's state as a read-only ClusterView; only
    the daemon that wires them imports node.py (and nothing imports it
    from outside server/ but the tests)."""
    for rel in ("sheepblk", "cli"):
        for path in _files(rel):
            if path.name == "daemon.py" and path.parent.name == "server":
                continue
            for level, module in _imports(path):
                target = _absolute(path, level, module)
                assert target != "sheepblk.server.node", \
                    f"{path.relative_to(ROOT)} imports the node"
