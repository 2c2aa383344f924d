"""Benchmark: what each built artifact weighs, what the AWS SDK costs in the dependencies layer, and its import time.

Reads a `sam build` folder (`make build`; default .aws-sam/build). For every function and layer: files, bytes on
disk and bytes zipped (deflate, as `sam deploy` uploads them). For the dependencies layer, the same figures for
two variants, made by leaving packages out of the built layer:

- without boto3's own line in requirements.txt: pip then still installs botocore (aws-xray-sdk, which Powertools'
  tracer extra pulls in, requires it), so only boto3 and s3transfer go;
- without any of the AWS SDK the python3.12 runtime also bundles (boto3, botocore, s3transfer, jmespath,
  python-dateutil, six, urllib3), which a custom build of the layer would have to strip.

Import time: fresh python3.12 interpreters with the deployed layout on sys.path (function folder, then the layers'
python/ folders, as /var/task and /opt/python), timing with perf_counter only `import boto3` and only the load of a
handler module (as benchmarks/bench_cold_start.py does), interleaved; each without bytecode, as deployed, and with
bytecode cached from an earlier run.

    .venv/bin/python benchmarks/bench_artifacts.py [--build-dir .aws-sam/build] [--python python3.12] [--runs 9]
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_cold_start import _env  # noqa: E402  (the same environment)

# Runs in the fresh interpreter: time the handler module's load only (interpreter start-up left out), in ms.
PROBE = """
import importlib.util, sys, time
start = time.perf_counter()
spec = importlib.util.spec_from_file_location("handler_module", sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules["handler_module"] = module
spec.loader.exec_module(module)
print((time.perf_counter() - start) * 1000)
"""

DIST_INFO = (".dist-info", ".data")
NOT_BOTO3_LINE = ("boto3", "s3transfer")
RUNTIME_SDK = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "python_dateutil", "six", "six.py", "urllib3")
IMPORT_BOTO3 = "import time\nstart = time.perf_counter()\nimport boto3\nprint((time.perf_counter() - start) * 1000)\n"


def _project(entry: str) -> str:
    name = entry
    for suffix in DIST_INFO:
        if name.endswith(suffix):
            name = name[: -len(suffix)].rsplit("-", 1)[0]
    return name.lower()


def measure(folder: Path, leave_out: tuple[str, ...] = ()) -> tuple[int, int, int]:
    """(files, bytes, zipped bytes) of an artifact folder, leaving out top-level python/ entries named in leave_out."""
    files = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        parts = path.relative_to(folder).parts
        if leave_out and len(parts) > 1 and parts[0] == "python" and _project(parts[1]) in leave_out:
            continue
        files.append(path)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in files:
            archive.write(path, path.relative_to(folder).as_posix())
    return len(files), sum(p.stat().st_size for p in files), buffer.tell()


def _import_ms(python: str, script: list[str], path: list[Path], env: dict) -> float:
    env = {**env, "PYTHONPATH": os.pathsep.join(map(str, path))}
    out = subprocess.run([python, *script], env=env, capture_output=True, text=True, check=True, cwd=path[0])
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--build-dir", type=Path, default=ROOT / ".aws-sam" / "build")
    parser.add_argument("--python", default="python3.12")
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--function", default="GenerateFunction")
    args = parser.parse_args()
    build = args.build_dir
    mb = 1024 * 1024

    print("| artifact | files | on disk (MB) | zipped (MB) |\n|---|---:|---:|---:|")
    for folder in sorted(p for p in build.iterdir() if p.is_dir()):
        count, size, zipped = measure(folder)
        print(f"| {folder.name} | {count} | {size / mb:.2f} | {zipped / mb:.2f} |")

    layer = build / "DependenciesLayer"
    print("\n| DependenciesLayer | files | on disk (MB) | zipped (MB) |\n|---|---:|---:|---:|")
    for label, leave_out in [
        ("as built (boto3 and botocore pinned)", ()),
        ("without the boto3 line (botocore still comes)", NOT_BOTO3_LINE),
        ("without the runtime's SDK packages (custom build)", RUNTIME_SDK),
    ]:
        count, size, zipped = measure(layer, leave_out)
        print(f"| {label} | {count} | {size / mb:.2f} | {zipped / mb:.2f} |")

    machine = {"x86_64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}.get(platform.machine(), platform.machine())
    if not any(machine in p.name for p in (layer / "python").rglob("*.so") if ".cpython-" in p.name):
        print(f"\nImport times skipped: the layer's compiled extensions are not built for this {machine} machine.")
        return
    path = [build / args.function, layer / "python", build / "DarkroomLayer" / "python"]
    scripts = {
        "import boto3": ["-c", IMPORT_BOTO3],
        f"{args.function}'s handler module": ["-c", PROBE, str(build / args.function / "app.py")],
    }
    with tempfile.TemporaryDirectory() as pycache:
        # As deployed (/opt is read-only and the artifacts hold no bytecode: every cold start compiles), and with
        # bytecode from an earlier run, as for modules that ship compiled.
        envs = {
            "no bytecode (as deployed)": {**_env(), "PYTHONDONTWRITEBYTECODE": "1"},
            "bytecode cached": {**_env(), "PYTHONPYCACHEPREFIX": pycache},
        }
        probes = {(name, mode): (script, env) for name, script in scripts.items() for mode, env in envs.items()}
        for script, env in probes.values():  # one unmeasured run each: warms the page cache, writes the bytecode
            _import_ms(args.python, script, path, env)
        samples: dict[tuple[str, str], list[float]] = {key: [] for key in probes}
        for _ in range(args.runs):
            for key, (script, env) in probes.items():
                samples[key].append(_import_ms(args.python, script, path, env))
    version = subprocess.run(
        [args.python, "-c", "import sys; print(sys.version.split()[0])"], capture_output=True, text=True, check=True
    ).stdout.strip()
    print(f"\nPython {version}, the deployed layout on sys.path; median of {args.runs} fresh interpreters.\n")
    print("| import | bytecode | median (ms) | min (ms) | max (ms) |\n|---|---|---:|---:|---:|")
    for (name, mode), values in samples.items():
        print(f"| {name} | {mode} | {statistics.median(values):.0f} | {min(values):.0f} | {max(values):.0f} |")


if __name__ == "__main__":
    main()
