"""Image tasks on the tiny SDXL- and FLUX-class pipelines, through the same code as production."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_settings
from darkroom_endpoint.contract import AnalyzeTask, ContentPolicyViolation, ContractError, ImageTask, Unsupported
from darkroom_endpoint.loading import ModelSet, load_models
from darkroom_endpoint.pipelines import DiffusionModel, QualityConfigError, diffusion_family, read_quality_config
from darkroom_endpoint.safety import PromptBlocklist
from darkroom_endpoint.tiny import tiny_quality

FAMILIES = ("sdxl", "flux")
SIDE = 128  # the tiny quality file's smallest side: cheap on two shared cores


def image_task(**fields) -> ImageTask:
    values = {
        "task": "generate",
        "prompt": "a lighthouse at dusk",
        "width": SIDE,
        "height": SIDE,
        "num_images": 1,
        "quality": "low",
        "seed": 7,
        **fields,
    }
    return ImageTask(**values)


def noise_image(width: int, height: int, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


class DenoiserCalls:
    """Counts the denoiser's forward passes: one per scheduler step (two with FLUX's true CFG)."""

    def __init__(self, model: DiffusionModel) -> None:
        denoiser = getattr(model.text2image, "unet", None) or model.text2image.transformer
        self.count = 0
        self._handle = denoiser.register_forward_hook(self._seen)

    def _seen(self, *_) -> None:
        self.count += 1

    def close(self) -> None:
        self._handle.remove()


@pytest.fixture
def calls():
    """calls(model) -> a DenoiserCalls, removed after the test."""
    made = []

    def attach(model: DiffusionModel) -> DenoiserCalls:
        made.append(DenoiserCalls(model))
        return made[-1]

    yield attach
    for counter in made:
        counter.close()


def test_family_comes_from_model_index_not_directory_names(tiny_models, tmp_path):
    misleading = {
        "sdxl": tmp_path / "FLUX.1-dev-flux",
        "flux": tmp_path / "stable-diffusion-xl-base-sdxl",
        "sd": tmp_path / "sdxl",
    }
    for family, target in misleading.items():
        shutil.copytree(tiny_models[family] / "diffusion", target)
        assert diffusion_family(target) == family
        model = DiffusionModel.load(target, tiny_models[family] / "quality.json", torch.device("cpu"))
        assert model.family == family
        assert model.multiple == (16 if family == "flux" else 8)
    assert (
        type(
            DiffusionModel.load(
                misleading["sdxl"], tiny_models["sdxl"] / "quality.json", torch.device("cpu")
            ).text2image
        ).__name__
        == "StableDiffusionXLPipeline"
    )


def test_an_unknown_pipeline_class_is_refused_at_load(tiny_models, tmp_path):
    directory = shutil.copytree(tiny_models["sdxl"] / "diffusion", tmp_path / "diffusion")
    index = json.loads((directory / "model_index.json").read_text())
    (directory / "model_index.json").write_text(json.dumps({**index, "_class_name": "KandinskyV22Pipeline"}))
    with pytest.raises(ValueError, match="'KandinskyV22Pipeline' is not supported"):
        load_models(tiny_settings(tiny_models["sdxl"], DARKROOM_DIFFUSION_DIR=str(directory)))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(("width", "height"), [(256, 256), (512, 512), (384, 256)])
def test_generate_returns_exactly_n_images_of_the_exact_size(model_sets, family, width, height):
    images = model_sets[family].run(image_task(width=width, height=height, num_images=2))
    assert len(images) == 2
    assert all(image.size == (width, height) and image.mode == "RGB" for image in images)
    assert not np.array_equal(pixels(images[0]), pixels(images[1]))  # two draws, not one image twice


@pytest.mark.parametrize("family", FAMILIES)
def test_same_seed_same_pixels_other_seed_other_pixels(model_sets, family):
    models = model_sets[family]
    first, again = models.run(image_task(seed=11))[0], models.run(image_task(seed=11))[0]
    other = models.run(image_task(seed=12))[0]
    assert np.array_equal(pixels(first), pixels(again))
    assert not np.array_equal(pixels(first), pixels(other))
    unseeded = [models.run(image_task(seed=None))[0] for _ in range(2)]
    assert not np.array_equal(pixels(unseeded[0]), pixels(unseeded[1]))


@pytest.mark.parametrize("family", FAMILIES)
def test_inpainting_keeps_every_pixel_outside_the_mask(model_sets, family, calls):
    source = noise_image(SIDE, SIDE)
    mask = Image.new("L", (SIDE, SIDE), 0)
    mask.paste(255, (32, 16, 96, 80))
    counter = calls(model_sets[family].diffusion)
    images = model_sets[family].run(image_task(task="edit", image=source, mask=mask, num_images=2))
    keep = np.asarray(mask) == 0
    assert counter.count > 0
    for image in images:
        assert image.size == (SIDE, SIDE)
        assert np.array_equal(pixels(image)[keep], pixels(source)[keep])
        changed = np.any(pixels(image) != pixels(source), axis=-1)
        assert changed[~keep].mean() > 0.9


@pytest.mark.parametrize("family", FAMILIES)
def test_edit_without_a_mask_is_image_to_image(model_sets, family, calls):
    models = model_sets[family]
    counter = calls(models.diffusion)
    task = image_task(task="edit", image=noise_image(SIDE, SIDE, seed=1), num_images=2, quality="high")
    images = models.run(task)
    assert [image.size for image in images] == [(SIDE, SIDE)] * 2
    # high = 4 steps at strength 0.6: image-to-image runs about 4 x 0.6 of them (SDXL rounds down, FLUX rounds
    # the skipped steps down), text-to-image would run all 4.
    assert counter.count == {"sdxl": 2, "flux": 3}[family]
    other_input = models.run(replace(task, image=noise_image(SIDE, SIDE, seed=2)))
    assert not np.array_equal(pixels(images[0]), pixels(other_input[0]))  # the input image shapes the result


@pytest.mark.parametrize(
    ("family", "width", "height", "rule"),
    [
        ("sdxl", 260, 256, "multiples of 8"),
        ("flux", 264, 256, "multiples of 16"),  # a multiple of 8, but FLUX packs 2x2 latents
        ("sdxl", 64, 256, "from 128 to 1024 pixels"),
        ("flux", 256, 2048, "from 128 to 1024 pixels"),
    ],
)
def test_sizes_the_model_cannot_make_are_refused_naming_the_rule(model_sets, calls, family, width, height, rule):
    models = model_sets[family]
    counter = calls(models.diffusion)
    for attempt in (models.check, models.run):
        with pytest.raises(Unsupported, match=rule) as refused:
            attempt(image_task(width=width, height=height))
        assert 400 <= refused.value.status < 500
        assert refused.value.param == ("width" if width != 256 else "height")
    assert counter.count == 0


@pytest.mark.parametrize("family", FAMILIES)
def test_quality_maps_to_the_configured_steps_and_guidance(model_sets, family, calls):
    models = model_sets[family]
    counter = calls(models.diffusion)
    for quality, steps in (("low", 2), ("medium", 3), ("high", 4)):
        counter.count = 0
        models.run(image_task(quality=quality))
        assert counter.count == steps
        assert models.diffusion.text2image.guidance_scale == tiny_quality()[family][quality]["guidance"]


def test_a_changed_quality_file_changes_the_steps(tiny_models, tmp_path, calls):
    config = tiny_quality()
    config["sdxl"]["low"].update(steps=5, guidance=2.5)
    (tmp_path / "quality.json").write_text(json.dumps(config))
    models = load_models(
        tiny_settings(
            tiny_models["sdxl"],
            DARKROOM_QUALITY_CONFIG=str(tmp_path / "quality.json"),
            DARKROOM_VLM_DIR=str(tiny_models["sdxl"] / "vlm"),
        )
    )
    counter = calls(models.diffusion)
    models.run(image_task(quality="low"))
    assert counter.count == 5
    assert models.diffusion.text2image.guidance_scale == 2.5


@pytest.mark.parametrize(
    "broken",
    [
        {"sdxl": {"min_side": 128, "max_side": 1024, "low": {"steps": 2}}},
        {"flux": tiny_quality()["flux"]},  # no section for sdxl
        {"sdxl": {**tiny_quality()["sdxl"], "low": {**tiny_quality()["sdxl"]["low"], "steps": 0}}},
        {"sdxl": {**tiny_quality()["sdxl"], "max_side": 64}},
        {**tiny_quality(), "flux": {**tiny_quality()["flux"], "high": {"steps": 4, "guidance": 3.5}}},  # other section
        {**tiny_quality(), "fluxx": tiny_quality()["flux"]},
    ],
)
def test_a_malformed_quality_file_is_refused_at_load(tmp_path, broken):
    (tmp_path / "quality.json").write_text(json.dumps(broken))
    with pytest.raises(QualityConfigError):
        read_quality_config(tmp_path / "quality.json", "sdxl")


def test_the_bundled_quality_file_is_valid_for_every_family():
    bundled = Path(__file__).resolve().parents[1] / "darkroom_endpoint" / "quality.json"
    for family in ("sd", "sdxl", "sd3", "flux"):
        quality = read_quality_config(bundled, family)
        assert quality.presets["low"].steps < quality.presets["medium"].steps < quality.presets["high"].steps


@pytest.mark.parametrize("family", FAMILIES)
def test_steps_guidance_and_negative_prompt_pass_through(model_sets, family, calls):
    models = model_sets[family]
    counter = calls(models.diffusion)
    models.run(image_task(steps=6, guidance=1.5))
    assert counter.count == 6
    assert models.diffusion.text2image.guidance_scale == 1.5
    plain = models.run(image_task(guidance=4.0))[0]
    counter.count = 0
    negative = models.run(image_task(guidance=4.0, negative_prompt="fog, blur"))[0]
    assert not np.array_equal(pixels(plain), pixels(negative))
    # SDXL folds the negative prompt into its batched CFG pass; FLUX runs true CFG: two passes per step.
    assert counter.count == (2 if family == "sdxl" else 4)


def test_negative_prompt_on_a_pipeline_without_one_is_unsupported(sdxl_models, monkeypatch):
    diffusion = sdxl_models.diffusion
    monkeypatch.setitem(diffusion._parameters, "text2image", diffusion._parameters["text2image"] - {"negative_prompt"})
    with pytest.raises(Unsupported) as refused:
        sdxl_models.check(image_task(negative_prompt="fog"))
    assert refused.value.param == "negative_prompt"
    sdxl_models.check(image_task())


def test_reference_images_and_transparency_are_unsupported(sdxl_models, calls):
    counter = calls(sdxl_models.diffusion)
    edit = image_task(task="edit", image=noise_image(SIDE, SIDE), reference_images=(noise_image(64, 64),))
    for task, param in ((edit, "reference_images"), (image_task(transparent=True), "background")):
        for attempt in (sdxl_models.check, sdxl_models.run):
            with pytest.raises(Unsupported) as refused:
                attempt(task)
            assert refused.value.param == param
            assert refused.value.body()["error"]["code"] == "unsupported"
    assert counter.count == 0


def test_the_blocklist_refuses_before_any_model_runs(sdxl_models, tmp_path, calls):
    (tmp_path / "blocklist.txt").write_text("# operator terms\n\ngore\nblood bath\nc++\n")
    blocklist = PromptBlocklist.from_file(tmp_path / "blocklist.txt")
    assert len(blocklist) == 3
    models = ModelSet(sdxl_models.diffusion, None, blocklist)
    counter = calls(sdxl_models.diffusion)
    for task in (
        image_task(prompt="A GORE scene"),
        image_task(negative_prompt="no\tblood   bath, please"),
        image_task(prompt="learn C++ today"),
    ):
        for attempt in (models.check, models.run):
            with pytest.raises(ContentPolicyViolation) as refused:
                attempt(task)
            assert refused.value.body()["error"]["code"] == "content_policy_violation"
    assert counter.count == 0
    models.check(image_task(prompt="Gorensen's bloodbath of c+ # operator terms"))  # whole words only


def test_load_models_reads_the_blocklist_file(tiny_models, tmp_path):
    (tmp_path / "blocklist.txt").write_text("gore\n")
    models = load_models(tiny_settings(tiny_models["sdxl"], DARKROOM_PROMPT_BLOCKLIST=str(tmp_path / "blocklist.txt")))
    with pytest.raises(ContentPolicyViolation):
        models.check(image_task(prompt="gore"))


def test_the_sd_safety_checker_flag_returns_no_image(sd_models, monkeypatch):
    checker = sd_models.diffusion.text2image.safety_checker
    source = noise_image(SIDE, SIDE)
    assert [image.size for image in sd_models.run(image_task(num_images=2))] == [(SIDE, SIDE)] * 2
    assert len(sd_models.run(image_task(task="edit", image=source))) == 1
    # A threshold below any cosine similarity: the real checker flags every image (and blacks it out).
    monkeypatch.setattr(checker.concept_embeds_weights, "data", torch.full_like(checker.concept_embeds_weights, -2.0))
    for task in (
        image_task(num_images=2),
        image_task(task="edit", image=source),
        image_task(task="edit", image=source, mask=Image.new("L", (SIDE, SIDE), 255)),
    ):
        with pytest.raises(ContentPolicyViolation):
            sd_models.run(task)


def test_a_flagged_safety_checker_output_returns_no_image(sdxl_models, monkeypatch):
    real = sdxl_models.diffusion.text2image
    verdicts = {"flags": [False, True]}

    def flagged_pipeline(**arguments):
        output = real(**arguments)
        return SimpleNamespace(images=output.images, nsfw_content_detected=verdicts["flags"])

    monkeypatch.setattr(sdxl_models.diffusion, "text2image", flagged_pipeline)
    with pytest.raises(ContentPolicyViolation) as refused:
        sdxl_models.run(image_task(num_images=2))
    assert refused.value.body() == {
        "error": {
            "code": "content_policy_violation",
            "param": None,
            "message": "The request was refused by the model server's content policy.",
        }
    }
    verdicts["flags"] = [False, False]
    assert len(sdxl_models.run(image_task(num_images=2))) == 2


def test_one_directory_only_leaves_the_other_task_unsupported(tiny_models, tmp_path):
    root = tiny_models["sdxl"]
    vlm_only = load_models(tiny_settings(tmp_path, DARKROOM_VLM_DIR=str(root / "vlm")))
    assert vlm_only.diffusion is None and vlm_only.tasks == ("analyze",)
    for task in (image_task(), image_task(task="edit", image=noise_image(SIDE, SIDE))):
        with pytest.raises(Unsupported, match="serves no image model"):
            vlm_only.run(task)
    diffusion_only = load_models(
        tiny_settings(
            tmp_path, DARKROOM_DIFFUSION_DIR=str(root / "diffusion"), DARKROOM_QUALITY_CONFIG=str(root / "quality.json")
        )
    )
    assert diffusion_only.vision is None and diffusion_only.tasks == ("generate", "edit")
    with pytest.raises(Unsupported, match="serves no vision-language model"):
        diffusion_only.check(AnalyzeTask(messages=(("user", "hi"),)))
    with pytest.raises(ValueError, match="no model to serve"):
        load_models(tiny_settings(tmp_path))
    assert isinstance(Unsupported("x"), ContractError)


def test_warm_up_runs_each_pipeline_once(sdxl_models, calls, monkeypatch):
    counter = calls(sdxl_models.diffusion)
    generated = []
    vision_generate = sdxl_models.vision.model.generate

    def counted(**inputs):
        generated.append(inputs["pixel_values"].shape[0])
        return vision_generate(**inputs)

    monkeypatch.setattr(sdxl_models.vision.model, "generate", counted)
    sdxl_models.warm_up()
    # text-to-image (1 step), image-to-image and inpainting (each raised to 1 step at their strengths)
    assert counter.count == 3
    assert generated == [1]
