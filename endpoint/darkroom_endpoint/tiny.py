"""Tiny, randomly initialised models in the exact on-disk layout of the real ones, for tests and local runs.

Nothing is downloaded: every component is built from a small config, every tokenizer from a vocabulary
written here, and everything is written with ``save_pretrained``, so the server loads them through the
same code as a production model directory. The weights are random but seeded, so two calls write the
same files. Layout (what :class:`darkroom_endpoint.settings.Settings` expects in ``SM_MODEL_DIR``)::

    directory/diffusion/     a diffusers pipeline (model_index.json): SDXL-, FLUX- or SD-class (the last with
                             SD's safety checker, which as written flags nothing)
    directory/vlm/           a LLaVA-style vision-language model (tiny CLIP vision tower + tiny Llama)
    directory/quality.json   very few steps per quality, so CPU runs take a fraction of a second

The VAEs have four levels (a scale factor of 8, like the real ones), so 256 and 512 px work.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

FAMILIES = ("sdxl", "flux", "sd")
SEED = 1234
_CLIP_MAX_LENGTH = 77
_VLM_IMAGE_SIZE = 32
_VLM_PATCH_SIZE = 8
_VLM_SPECIAL_TOKENS = ("<s>", "</s>", "<pad>", "<image>")
# The Jinja newline tip from the serving notes: a literal newline after a {% %} tag is swallowed by
# transformers' template rendering options, so newlines are written as {{ '\n' }}.
VLM_CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}</s>{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{{ '\\n' }}{% endif %}"
)


def tiny_quality(min_side: int = 128, max_side: int = 1024) -> dict:
    """A quality config with 2/3/4 steps per quality for the tiny families (same schema as quality.json)."""

    def family(guidance: float, extra: dict) -> dict:
        section: dict = {"min_side": min_side, "max_side": max_side}
        for quality, steps in (("low", 2), ("medium", 3), ("high", 4)):
            section[quality] = {
                "steps": steps,
                "guidance": guidance,
                "strength": 0.6,
                "inpaint_strength": 0.99,
                **extra,
            }
        return section

    return {"sdxl": family(5.0, {}), "flux": family(3.5, {"true_cfg_scale": 2.0}), "sd": family(7.5, {})}


def write_tiny_models(directory: Path, family: str = "sdxl") -> Path:
    """Write ``diffusion/`` (an SDXL-, FLUX- or SD-class pipeline), ``vlm/`` and ``quality.json`` under
    ``directory``; returns ``directory``."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        pipeline = {"sdxl": _tiny_sdxl, "flux": _tiny_flux, "sd": _tiny_sd}[family]()
        pipeline.save_pretrained(directory / "diffusion")
        torch.manual_seed(SEED)
        write_tiny_vlm(directory / "vlm")
    (directory / "quality.json").write_text(json.dumps(tiny_quality(), indent=2) + "\n")
    return directory


def _clip_tokenizer():
    from transformers import CLIPTokenizer

    # Every byte as a token, with and without CLIP's end-of-word suffix, and no merges: any text encodes.
    characters = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for piece in characters + [character + "</w>" for character in characters]:
        vocab[piece] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=_CLIP_MAX_LENGTH)


def _clip_text_config(vocab_size: int):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=vocab_size,
        hidden_act="gelu",
        projection_dim=32,
        max_position_embeddings=_CLIP_MAX_LENGTH,
    )


def _vae(latent_channels: int, **kwargs):
    from diffusers import AutoencoderKL

    # Four levels: the real VAEs' scale factor of 8, so a 256 px image is a 32x32 latent.
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=latent_channels,
        block_out_channels=(8, 16, 16, 16),
        layers_per_block=1,
        norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        sample_size=1024,
        **kwargs,
    )


def _tiny_unet(**family):
    """Two blocks of 32 and 64 channels, 4 input channels (what text-to-image and inpainting share)."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        norm_num_groups=8,
        **family,
    )


def _tiny_sdxl():
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    tokenizer = _clip_tokenizer()
    config = _clip_text_config(len(tokenizer))
    # A 4-channel UNet: the inpaint and img2img pipelines reuse it through from_pipe (a 9-channel
    # inpaint UNet would break text-to-image). 80 = 6 time ids x 8 + text_encoder_2's projection (32).
    unet = _tiny_unet(
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=80,
        cross_attention_dim=64,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1, timestep_spacing="leading"
    )
    return StableDiffusionXLPipeline(
        vae=_vae(4, scaling_factor=0.13025, force_upcast=True),
        text_encoder=CLIPTextModel(config),
        text_encoder_2=CLIPTextModelWithProjection(config),
        tokenizer=tokenizer,
        tokenizer_2=_clip_tokenizer(),
        unet=unet,
        scheduler=scheduler,
    )


def _tiny_sd():
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPTextModel, CLIPVisionConfig

    tokenizer = _clip_tokenizer()
    text_config = _clip_text_config(len(tokenizer))
    unet = _tiny_unet(cross_attention_dim=32)
    vision_config = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
        projection_dim=32,
    )
    # The checker's concept thresholds are 1 (cosine similarity never exceeds it): nothing is flagged until a
    # test lowers them.
    checker = StableDiffusionSafetyChecker(
        CLIPConfig(text_config=text_config.to_dict(), vision_config=vision_config.to_dict(), projection_dim=32)
    )
    return StableDiffusionPipeline(
        vae=_vae(4, scaling_factor=0.18215),
        text_encoder=CLIPTextModel(text_config),
        tokenizer=tokenizer,
        unet=unet,
        scheduler=EulerDiscreteScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
        ),
        safety_checker=checker,
        requires_safety_checker=True,
        feature_extractor=CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
    )


def _t5_tokenizer():
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(chr(code), -3.0) for code in range(33, 127)]
    pieces += [("▁" + chr(code), -2.5) for code in range(33, 127)]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=512)


def _tiny_flux():
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel, T5Config, T5EncoderModel

    tokenizer = _clip_tokenizer()
    tokenizer_2 = _t5_tokenizer()
    t5 = T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer_2),
            d_model=32,
            d_kv=8,
            d_ff=37,
            num_layers=1,
            num_heads=4,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
    )
    # 16 latent channels packed 2x2 -> 64 transformer input channels, as in FLUX.1; rope axes sum to the head dim.
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=64,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        guidance_embeds=True,
        axes_dims_rope=(4, 4, 8),
    )
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    vae = _vae(16, scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False)
    return FluxPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=CLIPTextModel(_clip_text_config(len(tokenizer))),
        tokenizer=tokenizer,
        text_encoder_2=t5,
        tokenizer_2=tokenizer_2,
        transformer=transformer,
    )


def _byte_level_tokenizer():
    from transformers import PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate(_VLM_SPECIAL_TOKENS)}
    for character in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[character] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    # Special tokens are matched whole, so "<image>" is one id: the one the model replaces with image features.
    backend.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in _VLM_SPECIAL_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",  # noqa: S106 - tokens, not passwords
        eos_token="</s>",  # noqa: S106
        pad_token="<pad>",  # noqa: S106
        extra_special_tokens={"image_token": "<image>"},
        chat_template=VLM_CHAT_TEMPLATE,
    )


def _unprintable_token_ids(tokenizer) -> list[int]:
    return sorted(
        tokenizer.convert_tokens_to_ids(character)
        for character, byte in _byte_level_characters().items()
        if not 32 <= byte < 127
    )


def _byte_level_characters() -> dict[str, int]:
    """GPT-2's byte -> printable character table (what ``ByteLevel`` maps bytes to), as character -> byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    characters, shift = {}, 0
    for byte in range(256):
        if byte in printable:
            characters[chr(byte)] = byte
        else:
            characters[chr(256 + shift)] = byte
            shift += 1
    return characters


def write_tiny_vlm(directory: Path) -> Path:
    """Write a tiny LLaVA-style model (CLIP vision tower, Llama, byte-level tokenizer, chat template) that
    reloads with ``AutoProcessor`` and ``AutoModelForImageTextToText``; returns ``directory``."""
    from transformers import (
        CLIPImageProcessorPil,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = _byte_level_tokenizer()
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=_VLM_IMAGE_SIZE,
        patch_size=_VLM_PATCH_SIZE,
        projection_dim=32,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlavaForConditionalGeneration(
        LlavaConfig(
            vision_config=vision,
            text_config=text,
            image_token_index=image_token_id,
            vision_feature_select_strategy="default",
            vision_feature_layer=-2,
        )
    )
    generation = model.generation_config
    generation.bos_token_id = tokenizer.bos_token_id
    generation.eos_token_id = tokenizer.eos_token_id
    generation.pad_token_id = tokenizer.pad_token_id
    # A short answer keeps CPU tests quick (random weights rarely stop on their own); vision.py reads it.
    generation.max_new_tokens = 16
    # Random weights pick any byte; an API answer of control characters and broken UTF-8 helps nobody, so the
    # answer is limited to printable ASCII (every byte still tokenizes on the way in).
    generation.suppress_tokens = _unprintable_token_ids(tokenizer)
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": _VLM_IMAGE_SIZE}, crop_size={"height": _VLM_IMAGE_SIZE, "width": _VLM_IMAGE_SIZE}
    )
    # One extra token for CLIP's class embedding, which the "default" strategy then drops again.
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=_VLM_PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=VLM_CHAT_TEMPLATE,
    )
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return Path(directory)
