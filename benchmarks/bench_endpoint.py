"""Benchmark: the model server's own cost per request (HTTP, JSON, base64, PNG) against the pipeline alone.

Both sides run the same tiny random-weight SDXL-class pipeline (``python -m darkroom_endpoint tiny``, with its
few-step ``quality.json``; its ``vlm/`` is removed so neither side loads a vision model) on the CPU, in two
processes alive at the same time, so a noisy machine slows both alike:

* **baseline**: a process that loads the models with ``darkroom_endpoint.loading.load_models`` and warms them up
  (what the server does before ``/ping`` answers 200), then times ``ModelSet.run(task)`` alone, in-process, for
  a task parsed from the very JSON body the server gets (parsing is done once, before timing); like the server,
  it does all model work on one ``GpuWorker`` thread;
* **measured**: the real server, ``python -m darkroom_endpoint serve --host 127.0.0.1 --port 0`` with
  ``SM_MODEL_DIR`` set, and an httpx client timing ``POST /invocations`` from the first byte sent to the answer's
  images base64-decoded (the request body is serialised once, before timing).

Each round runs one baseline call and one request, alternating which goes first, after one warm-up of each.
The server's own log line (``seconds=``, the time inside ``ModelServer.answer``: parse, queue, run, encode)
splits the overhead into the server's work and the HTTP exchange around it; the parse and the PNG encode are
also timed alone here, with the server's own functions. Peak memory is each process's VmHWM from
``/proc/PID/status``, reset through ``/proc/PID/clear_refs`` before each case, so each case has its own peak.

    PYTHONPATH=endpoint endpoint/.venv/bin/python benchmarks/bench_endpoint.py [--rounds 13] [--json PATH]
    make bench-endpoint

Both processes get ``OMP_NUM_THREADS`` = ``MKL_NUM_THREADS`` = ``--threads`` (2), and the baseline also calls
``torch.set_num_threads``: the server's model thread reads the same environment.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
ENDPOINT = ROOT / "endpoint"
if str(ENDPOINT) not in sys.path:
    sys.path.insert(0, str(ENDPOINT))

from darkroom_endpoint.contract import parse_task  # noqa: E402 - PIL only; no torch in this process
from darkroom_endpoint.server import _encode, decode_json  # noqa: E402 - the server's own encoder, timed alone

SEED = 7
PROMPT = "a lighthouse on a rocky coast at dusk, oil painting"
LOG_LINE = re.compile(
    r"invocation task=(\S+) images=(\d+) size=(\d+)x(\d+) body_bytes=(\d+) status=(\d+) "
    r"seconds=([0-9.]+)"
)

# Runs in the baseline process: load, warm up and run as the server does (all model work on one GpuWorker thread, the
# server's own class), timing ModelSet.run inside that thread. A run on the main thread measured 3-8 % slower here
# than on a worker thread (allocator arenas, probably), which would hide the overhead this benchmark is after.
BASELINE = r"""
import json, sys, time
import torch
torch.set_num_threads(int(sys.argv[1]))
from pathlib import Path
from darkroom_endpoint.contract import parse_task
from darkroom_endpoint.loading import load_models
from darkroom_endpoint.gpu_worker import GpuWorker
from darkroom_endpoint.settings import Settings

def load():
    models = load_models(settings)
    if settings.warm_up:
        models.warm_up()
    return models, torch.get_num_threads()

def timed(task):
    started = time.perf_counter()
    images = models.run(task)
    elapsed = time.perf_counter() - started
    assert len(images) == task.num_images and images[0].size == (task.width, task.height)
    return elapsed

settings = Settings.from_env()
worker = GpuWorker()
started = time.perf_counter()
models, threads = worker.submit(load).result()
tasks = [parse_task(json.loads(Path(path).read_bytes())) for path in sys.argv[2:]]
print(json.dumps({"ready_s": time.perf_counter() - started, "threads": threads}), flush=True)
for line in sys.stdin:
    print(json.dumps({"ms": worker.submit(timed, tasks[int(line)]).result() * 1000}), flush=True)
"""


def _b64png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _edit_inputs(side: int) -> tuple[str, str]:
    """A photo-like input (smooth colour fields plus grain: PNG compresses it as badly as a photo) and a mask
    repainting the centre quarter (255 = repaint, as the contract says)."""
    red = Image.linear_gradient("L").resize((side, side))
    green = red.rotate(90)
    blue = Image.effect_noise((side, side), 40).point(lambda value: value // 2 + 64)
    image = Image.merge("RGB", (red, green, blue))
    mask = Image.new("L", (side, side), 0)
    ImageDraw.Draw(mask).rectangle((side // 4, side // 4, 3 * side // 4 - 1, 3 * side // 4 - 1), fill=255)
    return _b64png(image), _b64png(mask)


def cases(sizes: list[int], edit_side: int | None) -> list[tuple[str, dict]]:
    """(name, request body) per case, smallest first."""
    out = []
    for side in sizes:
        out.append(
            (
                f"generate {side}x{side}",
                {
                    "task": "generate",
                    "prompt": PROMPT,
                    "width": side,
                    "height": side,
                    "num_images": 1,
                    "quality": "medium",
                    "seed": SEED,
                },
            )
        )
        if side == edit_side:
            image, mask = _edit_inputs(side)
            out.append(
                (
                    f"edit {side}x{side} + mask",
                    {
                        "task": "edit",
                        "prompt": PROMPT,
                        "width": side,
                        "height": side,
                        "num_images": 1,
                        "quality": "medium",
                        "seed": SEED,
                        "image": image,
                        "mask": mask,
                    },
                )
            )
    return out


def _proc_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


def _reset_peak(pid: int) -> None:
    # "5" resets VmHWM to the current resident size (Linux >= 4.0), so the next read is this case's own peak.
    with open(f"/proc/{pid}/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


class Baseline:
    """The in-process pipeline, in its own process (so its peak memory is its own)."""

    def __init__(self, env: dict[str, str], threads: int, body_paths: list[Path]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", BASELINE, str(threads), *map(str, body_paths)],
            env=env,
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the baseline process failed to load the models")
        self.ready = json.loads(line)

    def run(self, index: int) -> float:
        """Milliseconds of one ``ModelSet.run`` of case ``index``, timed inside that process."""
        self.process.stdin.write(f"{index}\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())["ms"]

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)


class Server:
    """``python -m darkroom_endpoint serve`` on a free loopback port, its log in a file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        started = time.perf_counter()
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "darkroom_endpoint", "serve", "--host", "127.0.0.1", "--port", "0"],
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        # The server prints its real port once the socket listens (models still loading; /ping 503 meanwhile).
        line = self.process.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        if not match:
            raise RuntimeError(f"the server did not start; see {log_path}")
        self.url = f"http://127.0.0.1:{match.group(1)}"
        self.client = httpx.Client(base_url=self.url, timeout=600)
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited; see {log_path}")
            if self.client.get("/ping").status_code == 200:
                break
            time.sleep(0.05)
        self.ready_s = time.perf_counter() - started

    def post(self, body: bytes) -> tuple[float, int]:
        """(milliseconds from sending to the images base64-decoded, response bytes) of one invocation."""
        started = time.perf_counter()
        response = self.client.post("/invocations", content=body, headers={"content-type": "application/json"})
        if response.status_code != 200:
            raise RuntimeError(f"invocation answered {response.status_code}: {response.text[:300]}")
        images = [base64.b64decode(image) for image in response.json()["images"]]
        elapsed = time.perf_counter() - started
        if not images:
            raise RuntimeError("invocation answered no image")
        return elapsed * 1000, len(response.content)

    def answer_seconds(self) -> list[float]:
        """The ``seconds=`` of every invocation logged so far, in order."""
        self._log.flush()
        return [float(match.group(7)) for match in LOG_LINE.finditer(self.log_path.read_text(errors="replace"))]

    def close(self) -> None:
        self.client.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


def _median_difference(measured: list[float], baseline: list[float]) -> float:
    return statistics.median(a - b for a, b in zip(measured, baseline, strict=True))


def _timed(function, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def measure(rounds: int, threads: int, sizes: list[int], edit_side: int | None, workdir: Path) -> dict:
    """Write the tiny models, start both processes, run every case; returns the figures."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ENDPOINT), os.environ.get("PYTHONPATH")])),
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "DARKROOM_DEVICE": "cpu",
        "SM_MODEL_DIR": str(workdir / "model"),
    }
    subprocess.run(
        [sys.executable, "-m", "darkroom_endpoint", "tiny", str(workdir / "model"), "--family", "sdxl"],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    shutil.rmtree(workdir / "model" / "vlm")  # the image path only: neither side loads a vision model
    selected = cases(sizes, edit_side)
    bodies = [json.dumps(body, separators=(",", ":")).encode() for _, body in selected]
    paths = []
    for index, body in enumerate(bodies):
        paths.append(workdir / f"case{index}.json")
        paths[-1].write_bytes(body)
    baseline = Baseline(env, threads, paths)
    server = None
    results = []
    try:
        server = Server(env, workdir / "server.log")
        startup = {
            "baseline_load_and_warm_up_s": baseline.ready["ready_s"],
            "server_start_to_ping_200_s": server.ready_s,
            "baseline_rss_ready_mb": _proc_kb(baseline.process.pid, "VmRSS") / 1024,
            "server_rss_ready_mb": _proc_kb(server.process.pid, "VmRSS") / 1024,
            "torch_threads_baseline": baseline.ready["threads"],
        }
        for index, ((name, _), body) in enumerate(zip(selected, bodies, strict=True)):
            for pid in (baseline.process.pid, server.process.pid):
                _reset_peak(pid)
            baseline.run(index)  # warm-up of this size (allocator, kernels)
            server.post(body)
            logged_before = len(server.answer_seconds())
            direct, served = [], []
            response_bytes = 0
            for round_number in range(rounds):
                if round_number % 2:  # alternate the order, so a drift in the machine's load hits both alike
                    served_ms, response_bytes = server.post(body)
                    direct_ms = baseline.run(index)
                else:
                    direct_ms = baseline.run(index)
                    served_ms, response_bytes = server.post(body)
                direct.append(direct_ms)
                served.append(served_ms)
            answered = [seconds * 1000 for seconds in server.answer_seconds()[logged_before:]]
            if len(answered) != rounds:
                raise RuntimeError(f"expected {rounds} invocation log lines, found {len(answered)}")
            peaks = {
                "baseline_peak_mb": _proc_kb(baseline.process.pid, "VmHWM") / 1024,
                "server_peak_mb": _proc_kb(server.process.pid, "VmHWM") / 1024,
            }
            # The server's own steps, timed alone here with its functions, on this case's body and an answer image.
            task = parse_task(decode_json(body))
            answer_image = Image.open(
                io.BytesIO(
                    base64.b64decode(
                        server.client.post(
                            "/invocations", content=body, headers={"content-type": "application/json"}
                        ).json()["images"][0]
                    )
                )
            ).convert("RGB")
            parse_ms = _timed(lambda b=body: parse_task(decode_json(b)), rounds)
            encode_ms = _timed(lambda t=task, i=answer_image: _encode(t, [i]), rounds)
            direct_ms, served_ms, answer_ms = (statistics.median(values) for values in (direct, served, answered))
            # Differences are taken within a round (the two runs sat next to each other in time), then the median:
            # on a shared machine that is steadier than the difference of two medians.
            results.append(
                {
                    "case": name,
                    "request_bytes": len(body),
                    "response_bytes": response_bytes,
                    "rounds": rounds,
                    "baseline_ms": direct_ms,
                    "server_ms": served_ms,
                    "overhead_ms": _median_difference(served, direct),
                    "ratio": served_ms / direct_ms,
                    "server_answer_ms": answer_ms,
                    "answer_minus_baseline_ms": _median_difference(answered, direct),
                    "http_and_client_ms": _median_difference(served, answered),
                    "parse_alone_ms": parse_ms,
                    "png_b64_json_encode_alone_ms": encode_ms,
                    "baseline_samples_ms": direct,
                    "server_samples_ms": served,
                    "server_answer_samples_ms": answered,
                    **peaks,
                    "peak_ratio": peaks["server_peak_mb"] / peaks["baseline_peak_mb"],
                }
            )
            print(f"  {name}: pipeline {direct_ms:.0f} ms, via server {served_ms:.0f} ms", file=sys.stderr, flush=True)
    finally:
        baseline.close()
        if server is not None:
            server.close()
    return {"startup": startup, "cases": results}


def markdown(report: dict) -> str:
    """The two tables docs/benchmarks.md shows."""
    rows = report["cases"]
    lines = [
        f"Median of {rows[0]['rounds']} rounds per case after one warm-up; baseline = `ModelSet.run(task)` in-process; "
        "ratio = server / baseline (medians); differences = median of the per-round differences.",
        "",
        "| case | pipeline alone (ms) | via server (ms) | overhead (ms) | ratio | inside `answer()` minus pipeline (ms)"
        " | HTTP + client decode (ms) | parse alone (ms) | PNG + base64 + JSON alone (ms) | response (bytes) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['case']} | {row['baseline_ms']:.0f} | {row['server_ms']:.0f} | {row['overhead_ms']:.0f} "
            f"| {row['ratio']:.3f} | {row['answer_minus_baseline_ms']:.0f} | {row['http_and_client_ms']:.0f} "
            f"| {row['parse_alone_ms']:.1f} | {row['png_b64_json_encode_alone_ms']:.1f} "
            f"| {row['response_bytes']:,} |"
        )
    startup = report["startup"]
    ready_baseline, ready_server = startup["baseline_rss_ready_mb"], startup["server_rss_ready_mb"]
    lines += [
        "",
        "Peak resident memory (VmHWM, reset before each case) of each process; ratio = server / baseline.",
        "",
        "| case | baseline process (MB) | server process (MB) | difference (MB) | ratio |",
        "|---|---:|---:|---:|---:|",
        f"| after load + warm-up (VmRSS) | {ready_baseline:.0f} | {ready_server:.0f} "
        f"| {ready_server - ready_baseline:.0f} | {ready_server / ready_baseline:.2f} |",
    ]
    for row in rows:
        lines.append(
            f"| {row['case']} | {row['baseline_peak_mb']:.0f} | {row['server_peak_mb']:.0f} "
            f"| {row['server_peak_mb'] - row['baseline_peak_mb']:.0f} | {row['peak_ratio']:.2f} |"
        )
    lines += [
        "",
        f"Load + warm-up: baseline {startup['baseline_load_and_warm_up_s']:.1f} s; server start to "
        f"`/ping` 200 {startup['server_start_to_ping_200_s']:.1f} s (includes the interpreter and imports).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the tables, optionally write ``--json``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=13, help="measured rounds per case (default 13)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads in both processes (default 2)")
    parser.add_argument("--sizes", default="512,1024", help="square sides to generate (default 512,1024)")
    parser.add_argument("--edit-size", type=int, default=512, help="side of the masked edit case; 0 for none")
    parser.add_argument("--json", type=Path, help="also write the figures (and every sample) here")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-endpoint-") as workdir:
        report = measure(
            args.rounds,
            args.threads,
            [int(side) for side in args.sizes.split(",")],
            args.edit_size or None,
            Path(workdir),
        )
    report["meta"] = {
        "utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "threads": args.threads,
        "wall_s": time.perf_counter() - started,
        "command": " ".join(sys.argv),
    }
    print(markdown(report))
    print(f"\n{report['meta']['utc']} UTC, {report['meta']['wall_s']:.0f} s in all")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
