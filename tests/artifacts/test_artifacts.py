"""What each deployed artifact holds, from a real `sam build`, against an allow-list.

One `make build` (SAM CLI from .venv-sam, the Lambda runtime's python3.12, samconfig.toml's options) into a
temporary build folder: the same template, Makefile targets (shared/Makefile, functions/console/Makefile) and
SAM builders that `sam deploy` ships, not a re-implementation of them. Every function and layer of the template is
checked, so a new one is covered without editing this file. About 30 s on 2 cores with empty SAM caches (pip
fetches the dependencies layer; up to a minute when the machine is busy), about 25 s with `.aws-sam` warm.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cfnlint.decode import cfn_yaml

from lambda_harness import ROOT, load_handler

pytestmark = pytest.mark.build

BUILD_TIMEOUT_SECONDS = 600
SERVERLESS = {"AWS::Serverless::Function": "CodeUri", "AWS::Serverless::LayerVersion": "ContentUri"}
# Anywhere in any artifact: source maps, bytecode, packaging leftovers, tests, the dev-only local stack and the CLI.
FORBIDDEN_NAMES = {"__pycache__", "tests", "test", "darkroom.egg-info"}
FORBIDDEN_SUFFIXES = {".map", ".pyc"}
FORBIDDEN_PATHS = {"darkroom/local", "darkroom/cli.py"}
# Files third-party wheels ship that the dependencies layer keeps (layers/runtime/Makefile installs wheels whole, but
# for c2pa-python's static library).
THIRD_PARTY_EXCEPTIONS = {"python/certifi/tests"}  # certifi's own 467-byte self-check, in its wheel
# DependenciesLayer: layers/runtime/requirements.txt and what it pulls in; a new dependency is a decision.
DEPENDENCY_MODULES = {
    # darkroom.content_credentials: c2pa-python, its aarch64 native library in c2pa/libs (installed without the
    # requirements only its build.py uses: layers/runtime/Makefile)
    "c2pa",
    "click",  # uvicorn's
    "uvicorn",  # darkroom.api.lwa: the HTTP server the Lambda Web Adapter talks to
    "PIL",
    "pillow.libs",
    "annotated_types",
    "anyio",
    "aws_lambda_powertools",
    "aws_xray_sdk",
    "boto3",
    "botocore",
    "certifi",
    "dateutil",
    "h11",
    "httpcore",
    "httpx",
    "idna",
    "jmespath",
    "multipart",
    "pydantic",
    "pydantic_core",
    "python_multipart",
    "s3transfer",
    "six.py",
    "snapshot_restore_py.py",
    "typing_extensions.py",
    "typing_inspection",
    "urllib3",
    "wrapt",
    "wrapt-stubs",
}
DEPENDENCY_DISTRIBUTIONS = {
    "c2pa_python",
    "click",
    "uvicorn",
    "annotated_types",
    "anyio",
    "aws_lambda_powertools",
    "aws_xray_sdk",
    "boto3",
    "botocore",
    "certifi",
    "h11",
    "httpcore",
    "httpx",
    "idna",
    "jmespath",
    "pillow",
    "pydantic",
    "pydantic_core",
    "python_dateutil",
    "python_multipart",
    "s3transfer",
    "six",
    "snapshot_restore_py",
    "typing_extensions",
    "typing_inspection",
    "urllib3",
    "wrapt",
}
_DISTRIBUTION = re.compile(r"^(?P<name>.+?)-(?P<version>[^-]+)\.(dist-info|data)$")


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory) -> Path:
    """The folder `make build` wrote, with its template.yaml naming each resource's artifact.

    Without python3.12 (which `sam build` needs) the tests are skipped with the one line that says how to get it,
    except under CI (``CI`` set), where that is a failure, as for tests/browser.
    """
    found = subprocess.run(["sh", "scripts/lambda_python.sh"], cwd=ROOT, capture_output=True, text=True)
    if found.returncode and not os.environ.get("CI"):
        pytest.skip(found.stderr.strip())
    out = tmp_path_factory.mktemp("sam-build")
    done = subprocess.run(
        ["make", "--no-print-directory", "build", f"SAM_BUILD_ARGS=--build-dir {out}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_SECONDS,
    )
    assert done.returncode == 0, f"make build failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return out


def _serverless(template: dict) -> dict[str, tuple[str, str]]:
    """logical id -> (resource type, code folder) of every function and layer."""
    return {
        name: (resource["Type"], str(resource["Properties"][SERVERLESS[resource["Type"]]]))
        for name, resource in template["Resources"].items()
        if resource["Type"] in SERVERLESS
    }


def _files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def _entries(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def artifacts(build_dir) -> dict[str, Path]:
    """logical id -> built artifact folder, for every function and layer of the source template."""
    built = _serverless(cfn_yaml.load(str(build_dir / "template.yaml")))
    source = _serverless(cfn_yaml.load(str(ROOT / "template.yaml")))
    assert set(built) == set(source)
    return {name: build_dir / folder for name, (_, folder) in built.items()}


def forbidden(relative: str) -> bool:
    """Whether a path inside an artifact is something no artifact may carry."""
    return (
        any(part in FORBIDDEN_NAMES for part in relative.split("/"))
        or Path(relative).suffix in FORBIDDEN_SUFFIXES
        or any(f"/{path}/" in f"/{relative}/" for path in FORBIDDEN_PATHS)
    )


def test_the_forbidden_rule_catches_what_it_names():
    for bad in [
        "python/darkroom/local/stack.py",
        "python/darkroom/cli.py",
        "static/x.js.map",
        "a/__pycache__/b.pyc",
        "python/certifi/tests/test_certify.py",
        "tests/test_x.py",
        "python/darkroom.egg-info/PKG-INFO",
    ]:
        assert forbidden(bad), bad
    for fine in ["python/darkroom/inference/local.py", "python/darkroom/catalog.json", "app.py", "python/PIL/x.py"]:
        assert not forbidden(fine), fine


def test_no_artifact_carries_maps_bytecode_tests_the_local_stack_or_the_cli(artifacts):
    found = {
        f"{name}/{path}"
        for name, folder in artifacts.items()
        for path in _entries(folder)
        if forbidden(path) and not any(path == e or path.startswith(e + "/") for e in THIRD_PARTY_EXCEPTIONS)
    }
    assert not found


def test_functions_carry_their_handler_modules_only(artifacts):
    source = _serverless(cfn_yaml.load(str(ROOT / "template.yaml")))
    for name, (kind, code_uri) in source.items():
        if kind != "AWS::Serverless::Function" or name == "ConsoleFunction":
            continue
        # run.sh: the functions that stream start under the Lambda Web Adapter (darkroom.api.lwa)
        expected = {p.name for p in (ROOT / code_uri).glob("*.py")} | {p.name for p in (ROOT / code_uri).glob("run.sh")}
        assert expected and _entries(artifacts[name]) == expected, name


def test_console_carries_its_pages_the_spec_and_only_the_swagger_ui_files_the_page_loads(artifacts):
    from swagger_ui_bundle import swagger_ui_path

    load_handler("console")
    served = sys.modules["darkroom_test_fn_console"].assets()  # /console/{asset} name -> (file, content type)
    package = Path(str(swagger_ui_path)).parents[1]  # .../swagger_ui_bundle
    swagger = {name: path for name, (path, _) in served.items() if package in path.parents}
    assert set(swagger) == {"swagger-ui-bundle.js", "swagger-ui.css"}
    expected = (
        {"app.py", "openapi.json", "swagger_ui_bundle/__init__.py", "swagger_ui_bundle/LICENSE"}
        | {f"static/{p.name}" for p in (ROOT / "functions" / "console" / "static").iterdir()}
        | {f"swagger_ui_bundle/{path.relative_to(package).as_posix()}" for path in swagger.values()}
    )
    folder = artifacts["ConsoleFunction"]
    assert _files(folder) == expected
    docs = (folder / "static" / "docs.html").read_text()
    assert sorted(re.findall(r'(?:src|href)="console/(swagger-ui[^"]*)"', docs)) == sorted(swagger)
    assert not (folder / "openapi.json").is_symlink()
    assert (folder / "openapi.json").read_bytes() == (ROOT / "docs" / "openapi.json").read_bytes()
    assert sum((folder / f).stat().st_size for f in expected) < 2_500_000  # it was 12 MB with the source maps


def test_darkroom_layer_is_the_package_without_the_local_stack_or_the_cli(artifacts):
    package = ROOT / "shared" / "darkroom"
    expected = {
        f"python/darkroom/{p.relative_to(package).as_posix()}"
        for p in package.rglob("*")
        if p.is_file() and p.suffix in {".py", ".json"} and "__pycache__" not in p.parts
    }
    expected = {p for p in expected if not forbidden(p)}
    assert "python/darkroom/catalog.json" in expected and "python/darkroom/local/stack.py" not in expected
    assert _files(artifacts["DarkroomLayer"]) == expected


def test_dependencies_layer_holds_the_pinned_requirements_and_what_they_pull_in(artifacts):
    site = artifacts["DependenciesLayer"] / "python"
    assert {p.name for p in artifacts["DependenciesLayer"].iterdir()} == {"python"}
    tops = {p.name for p in site.iterdir()}
    distributions = {m["name"].lower(): m["version"] for m in map(_DISTRIBUTION.match, tops) if m}
    assert tops - {m.string for m in map(_DISTRIBUTION.match, tops) if m} == DEPENDENCY_MODULES | {"requirements.txt"}
    assert set(distributions) == DEPENDENCY_DISTRIBUTIONS
    pins = dict(
        line.split("==")
        for line in (ROOT / "layers" / "runtime" / "requirements.txt").read_text().split()
        if "==" in line
    )
    # The layer's own SDK, as pinned: docs/architecture.md, "The dependencies layer pins boto3 and botocore".
    assert distributions["boto3"] == pins["boto3"] and distributions["botocore"] == pins["botocore"]


def test_the_dependencies_layer_is_built_for_graviton(artifacts):
    """Every function runs on arm64 (template Globals), so every compiled extension in the layer must be an
    aarch64 build: an x86_64 wheel would import-fail on the first cold start, not at deploy."""
    extensions = [p for p in artifacts["DependenciesLayer"].rglob("*.so") if ".cpython-" in p.name]
    assert extensions  # pydantic-core, Pillow and wrapt ship compiled code
    wrong = [p.name for p in extensions if "aarch64" not in p.name]
    assert not wrong
    for path in extensions[:3]:
        assert path.read_bytes()[18:20] == (183).to_bytes(2, "little")  # ELF e_machine: EM_AARCH64
    # c2pa-python's native library (loaded through ctypes, no CPython tag in its name): aarch64 as well.
    (native,) = artifacts["DependenciesLayer"].rglob("libc2pa_c.so")
    assert native.read_bytes()[18:20] == (183).to_bytes(2, "little")
