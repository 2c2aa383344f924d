"""What the HTTP server sees of the models: :func:`load_models` and the :class:`ModelSet` it returns.

``check`` is cheap (no model runs) and is called before a request is queued, so a request that cannot be
served is refused at once with a 4xx; ``run`` repeats it, then runs the model, from one worker thread at a
time. The prompt blocklist applies to image tasks (prompt and negative prompt) and is checked before any
model runs.
"""

from __future__ import annotations

import logging

import torch
from PIL import Image

from darkroom_endpoint.contract import AnalyzeTask, ImageTask, Unsupported
from darkroom_endpoint.pipelines import DiffusionModel
from darkroom_endpoint.safety import PromptBlocklist
from darkroom_endpoint.settings import Settings
from darkroom_endpoint.streaming import StreamSink
from darkroom_endpoint.vision import VisionModel

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """``"auto"``: CUDA when there is a GPU, else the CPU; anything else as torch spells it (``"cuda:1"``)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("DARKROOM_DEVICE asks for CUDA, but torch sees no GPU")
    return device


class ModelSet:
    """The loaded models; a task without a model answers :class:`Unsupported`."""

    def __init__(
        self,
        diffusion: DiffusionModel | None = None,
        vision: VisionModel | None = None,
        blocklist: PromptBlocklist | None = None,
    ) -> None:
        self.diffusion = diffusion
        self.vision = vision
        self.blocklist = blocklist or PromptBlocklist()

    @property
    def tasks(self) -> tuple[str, ...]:
        """The tasks this endpoint serves, for logs and health answers."""
        return (("generate", "edit") if self.diffusion else ()) + (("analyze",) if self.vision else ())

    def check(self, task: ImageTask | AnalyzeTask) -> None:
        """Raise ContractError/Unsupported/ContentPolicyViolation for a task that would be refused; runs no model."""
        if isinstance(task, AnalyzeTask):
            if self.vision is None:
                raise Unsupported(
                    "This endpoint serves no vision-language model: 'analyze' is not available.", param="task"
                )
            self.vision.check(task)
            return
        if self.diffusion is None:
            raise Unsupported(f"This endpoint serves no image model: '{task.task}' is not available.", param="task")
        self.diffusion.check(task)
        self.blocklist.check(task.prompt, task.negative_prompt)

    def planned_steps(self, task: ImageTask | AnalyzeTask) -> int:
        """About how many denoising steps an image task runs (0 for analyze): for streamed progress."""
        return self.diffusion.planned_steps(task) if isinstance(task, ImageTask) and self.diffusion else 0

    def run(self, task: ImageTask | AnalyzeTask, sink: StreamSink | None = None) -> list[Image.Image] | str:
        """Images (exactly ``num_images``, ``width`` x ``height``, RGB) or text; raises what :meth:`check` raises.
        ``sink``: a streamed image task's progress and partial images."""
        self.check(task)
        if isinstance(task, AnalyzeTask):
            return self.vision.run(task)
        return self.diffusion.run(task, sink)

    def warm_up(self) -> None:
        """One small real run of each loaded pipeline and model."""
        if self.diffusion is not None:
            self.diffusion.warm_up()
        if self.vision is not None:
            self.vision.warm_up()


def load_models(settings: Settings, *, max_new_tokens: int | None = None) -> ModelSet:
    """Load the diffusion pipeline and/or the vision-language model that ``settings`` name.

    Neither named is an error: a container that can answer nothing should fail its start, not report healthy.
    """
    if settings.diffusion_dir is None and settings.vlm_dir is None:
        raise ValueError("no model to serve: neither a diffusion pipeline nor a vision-language model directory")
    device = resolve_device(settings.device)
    blocklist = PromptBlocklist.from_file(settings.blocklist)
    diffusion = (
        DiffusionModel.load(settings.diffusion_dir, settings.quality_config, device)
        if settings.diffusion_dir is not None
        else None
    )
    vision = VisionModel.load(settings.vlm_dir, device, max_new_tokens) if settings.vlm_dir is not None else None
    models = ModelSet(diffusion, vision, blocklist)
    log.info("serving %s on %s (blocklist: %d terms)", ", ".join(models.tasks), device, len(blocklist))
    return models
