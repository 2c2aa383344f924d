"""What each function imports on a cold start, against the list committed beside this test.

A function's cold start is its import graph (docs/benchmarks.md, section 1): a module that one function
needs and another imports for nothing costs that other one every cold start. Each function's app is
loaded in a fresh interpreter, as Lambda loads it, and its third-party packages and darkroom modules are
compared with ``import_sets.json``. A new import fails here until the list is rewritten on purpose:

    .venv/bin/python tests/unit/test_import_sets.py --write
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LISTS = Path(__file__).with_name("import_sets.json")
FUNCTIONS = sorted(path.parent.name for path in (ROOT / "functions").glob("*/app.py"))

# Run in the fresh interpreter: load functions/<name>/app.py the way Lambda does, print what it imported.
PROBE = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("handler_module", sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules["handler_module"] = module
spec.loader.exec_module(module)
names = set(sys.modules)
packages = {name.split(".")[0] for name in names} - set(sys.stdlib_module_names) - {"darkroom", "handler_module"}
print(json.dumps({
    "packages": sorted(name for name in packages if not name.startswith("_")),
    "darkroom": sorted(name for name in names if name == "darkroom" or name.startswith("darkroom.")),
}))
"""

# Functions that answer without images: never Pillow, an HTTP client or an inference adapter.
NO_IMAGING = {"authorizer", "console", "models", "usage"}
IMAGING = {"PIL", "httpx", "httpcore"}


def imports_of(function: str) -> dict[str, list[str]]:
    # Nor pytest-cov's subprocess measurement (COV_CORE_*), which would add coverage to every set.
    skipped = ("AWS_", "DARKROOM_", "POWERTOOLS_", "COV_CORE_", "COVERAGE_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(skipped)}
    env |= {"AWS_DEFAULT_REGION": "us-east-1", "PYTHONPATH": str(ROOT / "shared")}
    path = ROOT / "functions" / function / "app.py"
    out = subprocess.run([sys.executable, "-c", PROBE, str(path)], env=env, capture_output=True, text=True, check=True)
    result: dict[str, list[str]] = json.loads(out.stdout)
    return result


@pytest.mark.parametrize("function", FUNCTIONS)
def test_a_function_imports_what_its_list_says(function: str) -> None:
    committed = json.loads(LISTS.read_text())[function]
    actual = imports_of(function)
    for kind in ("packages", "darkroom"):
        grown = sorted(set(actual[kind]) - set(committed[kind]))
        shrunk = sorted(set(committed[kind]) - set(actual[kind]))
        assert not grown, f"{function} now imports {grown} on a cold start; rewrite the list if that is meant"
        assert not shrunk, f"{function} no longer imports {shrunk}; rewrite the list (see this module's docstring)"


@pytest.mark.parametrize("function", sorted(NO_IMAGING))
def test_functions_without_images_never_import_imaging_or_inference(function: str) -> None:
    actual = imports_of(function)
    assert not IMAGING & set(actual["packages"])
    assert not [name for name in actual["darkroom"] if name.startswith("darkroom.inference")]


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    LISTS.write_text(json.dumps({name: imports_of(name) for name in FUNCTIONS}, indent=1) + "\n")
