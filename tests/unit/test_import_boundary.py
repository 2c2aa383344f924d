"""Deployed code never imports the dev-only local stack (darkroom.local) or the CLI (darkroom.cli).

The layer build leaves both out (shared/Makefile; tests/artifacts/test_artifacts.py checks the built layer), so an
import of either from a handler or a darkroom module would be an ImportError in Lambda only. Read from the source
with ast: absolute and relative imports, ``from darkroom import local``, and module names in strings
(``importlib.import_module``).
"""

from __future__ import annotations

import ast
from pathlib import Path

from lambda_harness import ROOT

PACKAGE = ROOT / "shared" / "darkroom"
DEV_ONLY = ("darkroom.local", "darkroom.cli")


def deployed_modules() -> dict[Path, str]:
    """Every deployed Python file -> its package ('' for handlers): functions/*/ and darkroom minus local/, cli.py."""
    files = {path: "" for path in (ROOT / "functions").glob("*/*.py")}
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE.parent)
        if relative.parts[1] == "local" or relative.as_posix() == "darkroom/cli.py":
            continue
        files[path] = ".".join(relative.parent.parts)
    return files


def imported_names(source: str, package: str) -> set[str]:
    """Absolute module names a file imports (``from a import b`` gives a.b as well), and module-like strings."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("darkroom."):
            names.add(node.value)
    return names


def dev_only(name: str) -> bool:
    return any(name == module or name.startswith(module + ".") for module in DEV_ONLY)


def test_the_reader_sees_every_form_of_import():
    found = imported_names(
        "import darkroom.local.stack\nfrom darkroom import cli\nfrom .local import aws\nfrom .. import cli as c\n"
        "importlib.import_module('darkroom.local.bridge')\nfrom darkroom.inference import local\n",
        "darkroom.api",
    )
    assert {n for n in found if dev_only(n)} == {"darkroom.local.stack", "darkroom.cli", "darkroom.local.bridge"}
    assert "darkroom.inference.local" in found and not dev_only("darkroom.inference.local")
    assert dev_only("darkroom.local") and dev_only("darkroom.cli") and not dev_only("darkroom.client")


def test_relative_imports_resolve_against_the_package():
    assert "darkroom.local.aws" in imported_names("from .local import aws\n", "darkroom")
    assert "darkroom.cli" in imported_names("from .. import cli\n", "darkroom.api")


def test_no_handler_or_darkroom_module_imports_the_local_stack_or_the_cli():
    modules = deployed_modules()
    assert ROOT / "functions" / "console" / "app.py" in modules and PACKAGE / "catalog.py" in modules
    assert PACKAGE / "cli.py" not in modules and PACKAGE / "local" / "stack.py" not in modules
    offending = {
        f"{path.relative_to(ROOT)}: {name}"
        for path, package in modules.items()
        for name in imported_names(path.read_text(), package)
        if dev_only(name)
    }
    assert not offending


# The edge: the handlers, the resolver (which turns an event into a typed request and a tenant), and the container
# that wires the ports. Below it, nothing sees the container or the resolver: a use case's inputs are its parameters.
EDGE_ONLY = ("darkroom.services", "darkroom.api.resolver")
EDGE = (PACKAGE / "api" / "resolver.py", PACKAGE / "services.py")


def test_below_the_edge_no_module_imports_the_container_or_the_resolver():
    offending = {
        f"{path.relative_to(ROOT)}: {name}"
        for path, package in deployed_modules().items()
        if package and path not in EDGE
        for name in imported_names(path.read_text(), package)
        if any(name == edge or name.startswith(edge + ".") for edge in EDGE_ONLY)
    }
    assert not offending
    handler = imported_names((ROOT / "functions" / "generate" / "app.py").read_text(), "")
    assert {"darkroom.services", "darkroom.api.resolver"} <= handler  # the check sees the edge's own imports
