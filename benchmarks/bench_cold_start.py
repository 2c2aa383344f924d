"""Benchmark: each function's cold start as a whole process, against a bare Powertools + boto3 handler.

Each sample is a fresh interpreter that loads one ``functions/<name>/app.py`` the way Lambda does
(``spec_from_file_location`` + ``exec_module``) and exits. Measured from outside, with ``os.wait4``: the
process's CPU time (user + system, interpreter start-up included) and its peak RSS. The anchor, measured
the same way in the same run, is ``benchmarks/anchor/app.py``: one route, one pydantic model, ``import
boto3`` and one client built at import, the floor a handler of this style pays.

Two rows per function:
- ``import``: the module load alone, as a cold start without SnapStart runs it. darkroom builds its clients
  and catalog on first use, so this row leaves them out, while the anchor builds its client here.
- ``+ prime``: the load, then the function's SnapStart before-snapshot hooks (:mod:`darkroom.snapstart`),
  which build what its first request would: the catalog, the key lookup, its AWS clients. This is the
  like-for-like row against the anchor, and what a SnapStart snapshot holds.

Runs are interleaved (round robin) so a burst of machine noise hits every module alike. Run it with the
interpreter and packages Lambda has: a venv with only the layer's requirements, because a dev venv's extra
packages change what some libraries import (httpx loads rich and pygments when they are installed):

    python3.12 -m venv /tmp/lv && /tmp/lv/bin/pip install -r layers/runtime/requirements.txt
    /tmp/lv/bin/python benchmarks/bench_cold_start.py [--runs 11]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ANCHOR = ROOT / "benchmarks" / "anchor" / "app.py"
FUNCTIONS = sorted(p.parent.name for p in (ROOT / "functions").glob("*/app.py"))

# Runs in the fresh interpreter. argv: the app's path, then "prime" to run its before-snapshot hooks.
PROBE = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("handler_module", sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules["handler_module"] = module
spec.loader.exec_module(module)
assert callable(module.lambda_handler)
if sys.argv[2:] == ["prime"] and "snapshot_restore_py" in sys.modules:
    import snapshot_restore_py
    for function, args, kwargs in reversed(snapshot_restore_py.get_before_snapshot()):
        function(*args, **kwargs)
"""


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "POWERTOOLS_", "DARKROOM_", "PYTHON"))}
    env.update(
        {
            "POWERTOOLS_TRACE_DISABLED": "true",  # as outside an X-Ray-traced Lambda (observability.capture_handler)
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "PYTHONPATH": str(ROOT / "shared"),
        }
    )
    return env


def _sample(python: str, path: Path, prime: bool, env: dict[str, str]) -> tuple[float, float]:
    """(CPU ms, peak RSS MB) of one fresh process."""
    args = [python, "-c", PROBE, str(path)] + (["prime"] if prime else [])
    process = subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise SystemExit(f"{path} failed to load (status {status})")
    return (usage.ru_utime + usage.ru_stime) * 1000, usage.ru_maxrss / 1024  # Linux: ru_maxrss in KB


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=11)
    parser.add_argument("--python", default=sys.executable, help="the interpreter to measure (default: this one)")
    options = parser.parse_args()
    env = _env()
    cases: dict[str, tuple[Path, bool]] = {"anchor (Powertools + boto3 client)": (ANCHOR, False)}
    for name in FUNCTIONS:
        cases[f"{name}: import"] = (ROOT / "functions" / name / "app.py", False)
        cases[f"{name}: + prime"] = (ROOT / "functions" / name / "app.py", True)
    for path, prime in cases.values():  # one unmeasured run each: compiles .pyc, warms the page cache
        _sample(options.python, path, prime, env)
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
    for _ in range(options.runs):
        for name, (path, prime) in cases.items():
            samples[name].append(_sample(options.python, path, prime, env))
    anchor_cpu = statistics.median(cpu for cpu, _ in samples["anchor (Powertools + boto3 client)"])
    anchor_rss = statistics.median(rss for _, rss in samples["anchor (Powertools + boto3 client)"])
    print(f"Median of {options.runs} fresh processes each, {options.python}; ratio = case / anchor.\n")
    print("| process | CPU (ms) | CPU ratio | peak RSS (MB) | RSS ratio |")
    print("|---|---:|---:|---:|---:|")
    for name, values in samples.items():
        cpu = statistics.median(value[0] for value in values)
        rss = statistics.median(value[1] for value in values)
        print(f"| {name} | {cpu:.0f} | {cpu / anchor_cpu:.2f} | {rss:.1f} | {rss / anchor_rss:.2f} |")


if __name__ == "__main__":
    main()
