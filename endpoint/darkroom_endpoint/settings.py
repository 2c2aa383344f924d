"""The model server's configuration, read from the environment once at start.

SageMaker sets ``SAGEMAKER_BIND_TO_PORT`` (several containers on one instance) and puts the model
artifacts in ``/opt/ml/model`` (``SM_MODEL_DIR``). Inside that directory darkroom expects:

* ``diffusion/``: a diffusers ``save_pretrained`` directory (``model_index.json``), or the pipeline at the
  root of the model directory itself;
* ``vlm/``: a transformers vision-language model directory (``config.json``), optional;
* ``quality.json`` (optional): the operator's steps and guidance per family and quality;
* ``blocklist.txt`` (optional): prompt terms to refuse, one per line.

Every path can be set directly instead (``DARKROOM_DIFFUSION_DIR`` & co.).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

BUNDLED_QUALITY = Path(__file__).with_name("quality.json")


@dataclass(frozen=True)
class Settings:
    host: str
    port: int
    model_dir: Path
    diffusion_dir: Path | None  # None: this endpoint serves no image task
    vlm_dir: Path | None  # None: this endpoint serves no analyze task
    quality_config: Path
    blocklist: Path | None
    queue_size: int  # requests that may wait while one runs; one more is a 429
    max_body_bytes: int  # a larger request body is a 413
    device: str  # "cuda" or "cpu" ("auto" resolved by the loader)
    warm_up: bool

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        model_dir = Path(env.get("SM_MODEL_DIR", "/opt/ml/model"))
        return cls(
            host=env.get("DARKROOM_ENDPOINT_HOST", "0.0.0.0"),  # noqa: S104 - SageMaker reaches the container
            port=int(env.get("SAGEMAKER_BIND_TO_PORT", "8080")),
            model_dir=model_dir,
            diffusion_dir=_directory(
                env.get("DARKROOM_DIFFUSION_DIR"), model_dir / "diffusion", model_dir, marker="model_index.json"
            ),
            vlm_dir=_directory(env.get("DARKROOM_VLM_DIR"), model_dir / "vlm", None, marker="config.json"),
            quality_config=Path(
                env.get("DARKROOM_QUALITY_CONFIG") or _existing(model_dir / "quality.json") or BUNDLED_QUALITY
            ),
            blocklist=_path(env.get("DARKROOM_PROMPT_BLOCKLIST")) or _existing(model_dir / "blocklist.txt"),
            queue_size=int(env.get("DARKROOM_QUEUE_SIZE", "8")),
            max_body_bytes=int(env.get("DARKROOM_MAX_BODY_BYTES", str(128 * 1024 * 1024))),
            device=env.get("DARKROOM_DEVICE", "auto"),
            warm_up=env.get("DARKROOM_WARM_UP", "true").lower() not in ("0", "false", "no"),
        )


def _directory(explicit: str | None, nested: Path, root: Path | None, *, marker: str) -> Path | None:
    if explicit:
        return Path(explicit)
    for candidate in (nested, root):
        if candidate is not None and (candidate / marker).is_file():
            return candidate
    return None


def _existing(path: Path) -> Path | None:
    return path if path.is_file() else None


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None
