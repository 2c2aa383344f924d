"""GPU benchmark: seconds per image of full-size SDXL- and FLUX.1-class pipelines through the model server's code.

Not a test and not needed by CI: a prepared script for when a GPU machine is lent. Nothing is downloaded. Every
component is instantiated from its published config (the values are written below: SDXL base 1.0's UNet, CLIP-L
and OpenCLIP-bigG text encoders and VAE; FLUX.1-dev's transformer (19 double + 38 single blocks), CLIP-L, T5-XXL
encoder and 16-channel VAE) with RANDOM weights, created directly on the GPU in the precision the server asks
for (fp16 for SDXL, bf16 for FLUX). Random weights do the same arithmetic as the real ones, so the time and the
memory are the real model's; the pictures are noise. Tokenizers are built offline from a byte vocabulary.

The pipelines then go through the server's own code: ``DiffusionModel.load`` (darkroom_endpoint/pipelines.py)
with the bundled ``quality.json``, where only diffusers' ``AutoPipelineForText2Image.from_pretrained`` is
replaced by "build the random pipeline in the dtype load asks for"; every other line of ``load`` (family check,
UNet check, ``.to(device)``, VAE slicing, the inpaint and img2img pipelines on the same weights) runs as in the
container, and ``ModelSet.warm_up`` / ``ModelSet.run`` are the server's. So steps and guidance are the server's
settings (medium: SDXL 30 steps at guidance 6.0 with classifier-free guidance, FLUX 28 steps at guidance 3.5,
guidance-distilled). Per family it reports: build time (random init on the GPU), the server's warm-up, the first
request at the measured size, seconds per image (median of ``--rounds``), images per hour at full use, the
weights' GPU memory and the peak (``torch.cuda.max_memory_allocated``) while generating.

The GPU machine (the ``run`` tool's nvidia-h200: Python 3.12, torch, transformers, Pillow, huggingface_hub) has no
diffusers, and nothing can be fetched there. Here, once (a pure-Python wheel, 6.4 MB; ``build/`` is git-ignored):

    pip download diffusers==0.42.1 --no-deps -d build/wheels/

then one ``run`` call with ``carry: ["build/wheels"]`` and ``timeout_s: 600``, from the repository root:

    set -o pipefail; python3 -m pip install -q --no-index --no-deps --target /tmp/site build/wheels/diffusers-*.whl
      && export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
      && python3 benchmarks/gpu_endpoint.py --json "$OUT/gpu.json" 2>&1 | tee "$OUT/gpu.log"

(one line, joined by the ``&&``). diffusers 0.42.1's other needs (huggingface-hub >= 1.32, safetensors >= 0.8,
Pillow, numpy, regex, requests, filelock) were all on that image's package list; the script imports everything
first and names what is missing, if anything.

On the CPU, ``--tiny-check`` shrinks every config (a few layers and channels, 256 px, 1 round) and runs the very
same code end to end in float32 (what the server asks for on a CPU), which proves the path without a GPU; it
also builds each tiny pipeline in its GPU dtype (fp16 / bf16) on the CPU and runs 2 steps of it, and instantiates
the full-size configs on PyTorch's meta device (no memory) to print their parameter counts, which checks the
configs themselves.

    python benchmarks/gpu_endpoint.py [--families sdxl,flux] [--qualities medium] [--rounds 3] [--size 1024]
                                      [--json PATH] [--tiny-check]
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import platform
import statistics
import sys
import tempfile
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "endpoint") not in sys.path:
    sys.path.insert(0, str(ROOT / "endpoint"))

SEED = 7
PROMPT = "a lighthouse on a rocky coast at dusk, oil painting, detailed"
PIPELINE_CLASSES = {"sdxl": "StableDiffusionXLPipeline", "flux": "FluxPipeline"}
# What DiffusionModel.load asks for on CUDA (pipelines.py); only --tiny-check's half-precision check uses it: on the
# GPU the dtype comes from load itself and is reported.
GPU_DTYPES = {"sdxl": "float16", "flux": "bfloat16"}

from full_size_pipelines import FULL, build_pipeline, tiny_configs  # noqa: E402 - after the path setup


def load_through_server(family: str, configs: dict[str, dict], device: Any) -> tuple[Any, dict]:
    """``DiffusionModel.load`` exactly as the container runs it, with diffusers' ``from_pretrained`` swapped for
    :func:`build_pipeline` in the dtype ``load`` asks for; returns (``ModelSet``, what the build recorded)."""
    from diffusers import AutoPipelineForText2Image

    from darkroom_endpoint.loading import ModelSet
    from darkroom_endpoint.pipelines import DiffusionModel
    from darkroom_endpoint.settings import BUNDLED_QUALITY

    built: dict[str, Any] = {}

    def from_pretrained(path: str, **kwargs: Any) -> Any:
        dtype = kwargs.get("dtype") or kwargs.get("torch_dtype")
        started = time.perf_counter()
        pipeline = build_pipeline(family, configs, device, dtype)
        _synchronize(device)
        built.update(
            dtype=str(dtype).removeprefix("torch."),
            build_s=time.perf_counter() - started,
            parameters={
                name: sum(p.numel() for p in module.parameters())
                for name, module in pipeline.components.items()
                if hasattr(module, "parameters")
            },
        )
        return pipeline

    with tempfile.TemporaryDirectory(prefix=f"gpu-endpoint-{family}-") as directory:
        # load reads the family from model_index.json's _class_name, as it does for a real model directory.
        (Path(directory) / "model_index.json").write_text(json.dumps({"_class_name": PIPELINE_CLASSES[family]}))
        with mock.patch.object(AutoPipelineForText2Image, "from_pretrained", staticmethod(from_pretrained)):
            model = DiffusionModel.load(Path(directory), BUNDLED_QUALITY, device)
    return ModelSet(model), built


def _synchronize(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _count(parameters: int) -> str:
    return f"{parameters / 1e9:.2f} B" if parameters >= 1e8 else f"{parameters / 1e6:.2f} M"


def _gib(count: int) -> float:
    return count / 1024**3


# -- measuring --------------------------------------------------------------------------------------------------------


def bench_family(
    family: str, configs: dict[str, dict], device: Any, size: int, qualities: list[str], rounds: int
) -> dict:
    """Build, load through the server, warm up as the server does, then time ``ModelSet.run`` per quality."""
    import torch

    from darkroom_endpoint.contract import ImageTask

    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    models, built = load_through_server(family, configs, device)
    load_s = time.perf_counter() - started
    weights = torch.cuda.memory_allocated(device) if cuda else 0
    started = time.perf_counter()
    models.warm_up()  # the server's: 1 step of text-to-image, img2img and inpaint at the smallest size
    _synchronize(device)
    warm_up_s = time.perf_counter() - started
    diffusion = models.diffusion
    result = {
        "family": family,
        "pipeline": type(diffusion.text2image).__name__,
        "dtype": built["dtype"],
        "parameters": built["parameters"],
        "parameters_total": sum(built["parameters"].values()),
        "build_s": built["build_s"],
        "load_s": load_s,
        "server_warm_up_s": warm_up_s,
        "weights_gib": _gib(weights),
        "size": size,
        "qualities": [],
    }
    for quality in qualities:
        preset = diffusion.quality.presets[quality]
        task = ImageTask(
            task="generate", prompt=PROMPT, width=size, height=size, num_images=1, quality=quality, seed=SEED
        )
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        started = time.perf_counter()
        models.run(task)  # first request at this size: kernels picked, allocator grown
        _synchronize(device)
        first_s = time.perf_counter() - started
        samples = []
        for _ in range(rounds):
            started = time.perf_counter()
            images = models.run(task)
            _synchronize(device)
            samples.append(time.perf_counter() - started)
            assert len(images) == 1 and images[0].size == (size, size)
        median = statistics.median(samples)
        result["qualities"].append(
            {
                "quality": quality,
                "steps": preset.steps,
                "guidance": preset.guidance,
                "first_request_s": first_s,
                "seconds_per_image": median,
                "samples_s": samples,
                "images_per_hour": 3600 / median,
                "peak_allocated_gib": _gib(torch.cuda.max_memory_allocated(device)) if cuda else None,
                "peak_reserved_gib": _gib(torch.cuda.max_memory_reserved(device)) if cuda else None,
            }
        )
        print(f"  {family} {quality}: {median:.2f} s/image", file=sys.stderr, flush=True)
    del models, diffusion
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return result


def meta_parameter_counts() -> dict[str, dict[str, int]]:
    """Parameter counts of the full-size configs, built on the meta device (no memory): checks the configs here."""
    import torch

    counts = {}
    for family, configs in FULL.items():
        pipeline = build_pipeline(family, configs, torch.device("meta"), torch.float32)
        counts[family] = {
            name: sum(p.numel() for p in module.parameters())
            for name, module in pipeline.components.items()
            if hasattr(module, "parameters")
        }
    return counts


def half_precision_check(family: str) -> dict:
    """``--tiny-check`` only: build the tiny pipeline in the dtype the server asks for on CUDA (fp16 SDXL, bf16 FLUX),
    on the CPU, and run 2 steps of it, so the half-precision construction is proven here too (on the CPU the server
    itself asks for float32)."""
    import torch

    dtype = getattr(torch, GPU_DTYPES[family])
    started = time.perf_counter()
    pipeline = build_pipeline(family, tiny_configs(family), torch.device("cpu"), dtype)
    dtypes = sorted(
        {
            str(tensor.dtype).removeprefix("torch.")
            for module in pipeline.components.values()
            if hasattr(module, "parameters")
            for tensor in module.parameters()
        }
    )
    pipeline.set_progress_bar_config(disable=True)
    image = pipeline(
        prompt=PROMPT,
        num_inference_steps=2,
        guidance_scale=5.0,
        width=256,
        height=256,
        output_type="pil",
        generator=torch.Generator().manual_seed(SEED),
    ).images[0]
    if dtypes != [str(dtype).removeprefix("torch.")] or image.size != (256, 256):
        raise RuntimeError(f"{family}: built in {dtypes}, made {image.size}")
    if torch.get_default_dtype() != torch.float32:
        raise RuntimeError("the default dtype was not restored")
    return {"family": family, "parameter_dtypes": dtypes, "seconds": time.perf_counter() - started}


def markdown(report: dict) -> str:
    """The table docs/benchmarks.md shows."""
    lines = [
        "| family | dtype | parameters | quality (steps, guidance) | build (s) | server warm-up (s) "
        "| first request (s) | s / image (median) | images / hour | weights (GiB) | peak allocated (GiB) |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for family in report["families"]:
        for row in family["qualities"]:
            peak = "-" if row["peak_allocated_gib"] is None else f"{row['peak_allocated_gib']:.1f}"
            weights = "-" if row["peak_allocated_gib"] is None else f"{family['weights_gib']:.1f}"
            lines.append(
                f"| {family['pipeline']} | {family['dtype']} | {_count(family['parameters_total'])} "
                f"| {row['quality']} ({row['steps']}, {row['guidance']:g}) | {family['build_s']:.1f} "
                f"| {family['server_warm_up_s']:.1f} | {row['first_request_s']:.2f} | {row['seconds_per_image']:.2f} "
                f"| {row['images_per_hour']:.0f} | {weights} | {peak} |"
            )
    return "\n".join(lines)


def preflight() -> list[str]:
    """What is missing for this script, in words (an empty list when nothing is)."""
    missing = []
    for module, hint in (
        ("torch", "torch"),
        ("transformers", "transformers"),
        ("tokenizers", "tokenizers"),
        ("PIL", "Pillow (carry its wheel)"),
        ("diffusers", "diffusers 0.42.1 (carry its wheel)"),
    ):
        try:
            importlib.import_module(module)
        except ImportError as error:
            missing.append(f"{hint}: {error}")
    return missing


def main(argv: list[str] | None = None) -> int:
    """Parse the options, run the families, print the table, optionally write ``--json``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--families", default="sdxl,flux", help="comma-separated: sdxl, flux (default both)")
    parser.add_argument("--qualities", default="medium", help="comma-separated: low, medium, high (default medium)")
    parser.add_argument("--rounds", type=int, help="timed runs per quality (default 3; 1 with --tiny-check)")
    parser.add_argument("--size", type=int, help="square side in pixels (default 1024; 256 with --tiny-check)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when there is a GPU), cuda, cuda:1, cpu")
    parser.add_argument(
        "--tiny-check",
        action="store_true",
        help="shrunken configs at 256 px (runs on the CPU): proves the code path, measures nothing",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    families = [name.strip() for name in args.families.split(",") if name.strip()]
    qualities = [name.strip() for name in args.qualities.split(",") if name.strip()]
    if not set(families) <= set(FULL) or not set(qualities) <= {"low", "medium", "high"}:
        parser.error("--families takes sdxl and/or flux; --qualities low, medium and/or high")
    missing = preflight()
    if missing:
        print("gpu_endpoint: missing on this machine:\n  " + "\n  ".join(missing), file=sys.stderr)
        return 2
    import diffusers
    import torch
    import transformers

    from darkroom_endpoint.loading import resolve_device

    device = resolve_device(args.device)
    if device.type != "cuda" and not args.tiny_check:
        print(
            "gpu_endpoint: no GPU here; full-size pipelines on the CPU would take hours. Use --tiny-check to prove "
            "the code path, or --device cuda on a GPU machine.",
            file=sys.stderr,
        )
        return 2
    rounds = args.rounds or (1 if args.tiny_check else 3)
    size = args.size or (256 if args.tiny_check else 1024)
    warnings.filterwarnings("ignore", message=".*invalid value encountered in cast.*")  # random weights: NaN pixels
    report: dict[str, Any] = {
        "meta": {
            "utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(sys.argv),
            "tiny_check": args.tiny_check,
            "device": str(device),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "diffusers": diffusers.__version__,
            "size": size,
            "rounds": rounds,
        },
        "families": [],
    }
    if args.tiny_check:
        report["full_size_parameters"] = meta_parameter_counts()
        for family, counts in report["full_size_parameters"].items():
            parts = ", ".join(f"{name} {count / 1e6:,.1f} M" for name, count in counts.items())
            print(f"full-size {family} (meta device): {sum(counts.values()) / 1e9:.3f} B = {parts}", flush=True)
    for family in families:
        configs = tiny_configs(family) if args.tiny_check else FULL[family]
        report["families"].append(bench_family(family, configs, device, size, qualities, rounds))
        if args.tiny_check:
            check = half_precision_check(family)
            report.setdefault("half_precision_check", []).append(check)
            print(f"  {family}: tiny pipeline built in {check['parameter_dtypes']} on the CPU, 2 steps ran", flush=True)
    title = "tiny-check (shrunken configs; timings mean nothing)" if args.tiny_check else f"{report['meta']['gpu']}"
    print(f"\n{title}, {size}x{size}, n=1, median of {rounds}; {report['meta']['utc']} UTC\n")
    print(markdown(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
