"""Full-size SDXL- and FLUX.1-architecture diffusers pipelines with random weights, built on a device in a dtype
(``benchmarks/gpu_endpoint.py``'s models): the published component configs, shrunken ones for ``--tiny-check``,
and tokenizers built offline from a byte vocabulary. Nothing is downloaded."""

from __future__ import annotations

import contextlib
from typing import Any

# -- published configs (the component config.json files of the released checkpoints) ----------------------------------

# stabilityai/stable-diffusion-xl-base-1.0, unet/config.json (2.57 B parameters).
SDXL_UNET = {
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "center_input_sample": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "only_cross_attention": False,
    "block_out_channels": (320, 640, 1280),
    "layers_per_block": 2,
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "act_fn": "silu",
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "cross_attention_dim": 2048,
    "transformer_layers_per_block": (1, 2, 10),
    "attention_head_dim": (5, 10, 20),
    "use_linear_projection": True,
    "upcast_attention": None,
    "resnet_time_scale_shift": "default",
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,  # 6 time ids x 256 + text_encoder_2's 1280 pooled projection
    "time_embedding_type": "positional",
    "conv_in_kernel": 3,
    "conv_out_kernel": 3,
}
# openai/clip-vit-large-patch14's text tower: SDXL's text_encoder and FLUX.1's text_encoder (123 M).
CLIP_L = {
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "projection_dim": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "pad_token_id": 1,
}
# laion/CLIP-ViT-bigG-14's text tower with its projection: SDXL's text_encoder_2 (695 M).
OPENCLIP_BIGG = {
    "vocab_size": 49408,
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "projection_dim": 1280,
    "num_hidden_layers": 32,
    "num_attention_heads": 20,
    "max_position_embeddings": 77,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-5,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "pad_token_id": 1,
}
_VAE_COMMON = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "act_fn": "silu",
    "norm_num_groups": 32,
    "sample_size": 1024,
    "force_upcast": True,
}
# stable-diffusion-xl-base-1.0, vae/config.json (84 M).
SDXL_VAE = {**_VAE_COMMON, "latent_channels": 4, "scaling_factor": 0.13025}
SDXL_SCHEDULER = {  # EulerDiscreteScheduler, scheduler/scheduler_config.json
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "interpolation_type": "linear",
    "use_karras_sigmas": False,
    "steps_offset": 1,
    "timestep_spacing": "leading",
}
# black-forest-labs/FLUX.1-dev, transformer/config.json (11.9 B).
FLUX_TRANSFORMER = {
    "patch_size": 1,
    "in_channels": 64,
    "num_layers": 19,
    "num_single_layers": 38,
    "attention_head_dim": 128,
    "num_attention_heads": 24,
    "joint_attention_dim": 4096,
    "pooled_projection_dim": 768,
    "guidance_embeds": True,
    "axes_dims_rope": (16, 56, 56),
}
# google/t5-v1_1-xxl's encoder: FLUX.1-dev's text_encoder_2 (4.76 B).
T5_XXL = {
    "vocab_size": 32128,
    "d_model": 4096,
    "d_kv": 64,
    "d_ff": 10240,
    "num_layers": 24,
    "num_heads": 64,
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "dropout_rate": 0.1,
    "layer_norm_epsilon": 1e-6,
    "feed_forward_proj": "gated-gelu",
    "tie_word_embeddings": False,
    "pad_token_id": 0,
    "eos_token_id": 1,
    "decoder_start_token_id": 0,
}
# FLUX.1-dev, vae/config.json: 16 latent channels, no quant convs (84 M).
FLUX_VAE = {
    **_VAE_COMMON,
    "latent_channels": 16,
    "scaling_factor": 0.3611,
    "shift_factor": 0.1159,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
    "mid_block_add_attention": True,
}
FLUX_SCHEDULER = {  # FlowMatchEulerDiscreteScheduler, scheduler/scheduler_config.json
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.5,
    "max_shift": 1.15,
    "base_image_seq_len": 256,
    "max_image_seq_len": 4096,
}

FULL = {
    "sdxl": {
        "unet": SDXL_UNET,
        "text_encoder": CLIP_L,
        "text_encoder_2": OPENCLIP_BIGG,
        "vae": SDXL_VAE,
        "scheduler": SDXL_SCHEDULER,
    },
    "flux": {
        "transformer": FLUX_TRANSFORMER,
        "text_encoder": CLIP_L,
        "text_encoder_2": T5_XXL,
        "vae": FLUX_VAE,
        "scheduler": FLUX_SCHEDULER,
    },
}


def tiny_configs(family: str) -> dict[str, dict]:
    """The full configs with a few layers and channels: same classes and block types, for ``--tiny-check``."""
    clip = {
        "hidden_size": 32,
        "intermediate_size": 37,
        "projection_dim": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
    }
    vae = {"block_out_channels": (8, 16, 16, 16), "layers_per_block": 1, "norm_num_groups": 8}
    full = FULL[family]
    if family == "sdxl":
        # Three levels and the same block types as the real UNet; 80 = 6 time ids x 8 + text_encoder_2's 32.
        unet = {
            "block_out_channels": (32, 64, 64),
            "layers_per_block": 1,
            "transformer_layers_per_block": (1, 1, 1),
            "attention_head_dim": (2, 4, 4),
            "norm_num_groups": 8,
            "cross_attention_dim": 64,
            "addition_time_embed_dim": 8,
            "projection_class_embeddings_input_dim": 80,
            "sample_size": 32,
        }
        return {
            "unet": {**full["unet"], **unet},
            "text_encoder": {**full["text_encoder"], **clip},
            "text_encoder_2": {**full["text_encoder_2"], **clip},
            "vae": {**full["vae"], **vae},
            "scheduler": full["scheduler"],
        }
    transformer = {
        "num_layers": 1,
        "num_single_layers": 1,
        "attention_head_dim": 16,
        "num_attention_heads": 2,
        "joint_attention_dim": 32,
        "pooled_projection_dim": 32,
        "axes_dims_rope": (4, 4, 8),
    }
    t5 = {"d_model": 32, "d_kv": 8, "d_ff": 37, "num_layers": 1, "num_heads": 4}
    return {
        "transformer": {**full["transformer"], **transformer},
        "text_encoder": {**full["text_encoder"], **clip},
        "text_encoder_2": {**full["text_encoder_2"], **t5},
        "vae": {**full["vae"], **vae},
        "scheduler": full["scheduler"],
    }


# -- tokenizers, offline ----------------------------------------------------------------------------------------------


def _byte_tokenizer(bos: str | None, eos: str, pad: str, max_length: int):
    """A fast tokenizer whose vocabulary is the 256 byte symbols (any text encodes, no merges), with ``bos``/``eos``
    added around every text: the token count the pipelines pad or truncate to is the real one (77 for CLIP, 512
    for T5), which is what sets the text encoders' work. Built from ``tokenizers`` so it works with transformers
    4 and 5 alike."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = [token for token in (pad, bos, eos) if token is not None]
    vocab = {token: index for index, token in enumerate(dict.fromkeys(specials))}
    for character in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[character] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    single = f"{bos} $A {eos}" if bos else f"$A {eos}"
    backend.post_processor = processors.TemplateProcessing(
        single=single, special_tokens=[(token, vocab[token]) for token in dict.fromkeys((bos, eos)) if token]
    )
    extra = {"bos_token": bos} if bos else {}
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token=eos, pad_token=pad, unk_token=eos, model_max_length=max_length, **extra
    )


def clip_tokenizer():
    """CLIP's layout: start and end tokens, 77 positions, padded with the end token (as CLIP-L's tokenizer)."""
    return _byte_tokenizer("<|startoftext|>", "<|endoftext|>", "<|endoftext|>", 77)


def t5_tokenizer():
    """T5's layout: no start token, ``</s>`` at the end, ``<pad>`` id 0; FLUX pads to 512 tokens."""
    return _byte_tokenizer(None, "</s>", "<pad>", 512)


# -- building ---------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _created_as(device: Any, dtype: Any):
    """Tensors created inside are created on ``device`` in ``dtype``: 12 B parameters are initialised by GPU kernels
    in half precision, never first in float32 on the CPU (minutes, and 48 GB)."""
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def _ready(module: Any) -> Any:
    # from_pretrained returns modules in eval mode without gradients; a constructor returns them training (T5's
    # dropout would run). The pipelines also run under no_grad.
    return module.eval().requires_grad_(False)


def build_pipeline(family: str, configs: dict[str, dict], device: Any, dtype: Any) -> Any:
    """A diffusers pipeline of ``family`` with random weights, every weight created on ``device`` in ``dtype``."""
    import diffusers
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    with _created_as(device, dtype):
        vae = _ready(diffusers.AutoencoderKL(**configs["vae"]))
        text_encoder = _ready(CLIPTextModel(CLIPTextConfig(**configs["text_encoder"])))
        if family == "sdxl":
            unet = _ready(diffusers.UNet2DConditionModel(**configs["unet"]))
            text_encoder_2 = _ready(CLIPTextModelWithProjection(CLIPTextConfig(**configs["text_encoder_2"])))
        else:
            transformer = _ready(diffusers.FluxTransformer2DModel(**configs["transformer"]))
            text_encoder_2 = _ready(T5EncoderModel(T5Config(**configs["text_encoder_2"])))
    # Schedulers hold their own float32/float64 tables: created outside the half-precision default.
    if family == "sdxl":
        scheduler = diffusers.EulerDiscreteScheduler(**configs["scheduler"])
        return diffusers.StableDiffusionXLPipeline(
            vae=vae,
            text_encoder=text_encoder,
            text_encoder_2=text_encoder_2,
            tokenizer=clip_tokenizer(),
            tokenizer_2=clip_tokenizer(),
            unet=unet,
            scheduler=scheduler,
        )
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(**configs["scheduler"])
    return diffusers.FluxPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=clip_tokenizer(),
        text_encoder_2=text_encoder_2,
        tokenizer_2=t5_tokenizer(),
        transformer=transformer,
    )
