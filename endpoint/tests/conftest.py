"""Shared fixtures: the tiny random-weight models, written once per session and loaded through production code."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

# The package lives beside this folder; `python -m pytest` from endpoint/ finds it anyway, plain `pytest` may not.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from darkroom_endpoint.loading import ModelSet, load_models
from darkroom_endpoint.settings import Settings
from darkroom_endpoint.tiny import write_tiny_models

# The test machines have two cores; more threads only contend.
torch.set_num_threads(2)


def tiny_settings(root: Path, **overrides: str) -> Settings:
    """Settings for a tiny model directory written by write_tiny_models, on the CPU."""
    environ = {
        "SM_MODEL_DIR": str(root),
        "DARKROOM_QUALITY_CONFIG": str(root / "quality.json"),
        "DARKROOM_DEVICE": "cpu",
        **overrides,
    }
    return Settings.from_env(environ)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """family ("sdxl", "flux", "sd") -> a model directory with diffusion/, vlm/ and quality.json."""
    return {
        family: write_tiny_models(tmp_path_factory.mktemp(f"tiny-{family}"), family)
        for family in ("sdxl", "flux", "sd")
    }


@pytest.fixture(scope="session")
def sdxl_models(tiny_models: dict[str, Path]) -> ModelSet:
    """The tiny SDXL-class pipeline and the tiny VLM, loaded by load_models."""
    return load_models(tiny_settings(tiny_models["sdxl"]))


@pytest.fixture(scope="session")
def flux_models(tiny_models: dict[str, Path]) -> ModelSet:
    """The tiny FLUX-class pipeline and the tiny VLM, loaded by load_models."""
    return load_models(tiny_settings(tiny_models["flux"]))


@pytest.fixture(scope="session")
def sd_models(tiny_models: dict[str, Path]) -> ModelSet:
    """The tiny SD-class pipeline with SD's safety checker (which, as written, flags nothing)."""
    return load_models(tiny_settings(tiny_models["sd"]))


@pytest.fixture(scope="session")
def model_sets(sdxl_models: ModelSet, flux_models: ModelSet) -> dict[str, ModelSet]:
    """family -> its loaded ModelSet."""
    return {"sdxl": sdxl_models, "flux": flux_models}
