"""Caption in-process with a Qwen2-VL / Qwen2.5-VL model: the images never leave the machine.

The model is a hub id found in the local Hugging Face cache (nothing is downloaded here) or
a folder. We drive the tokenizer and image processor directly instead of the model's
`AutoProcessor`: transformers' Qwen-VL processor insists on a video processor, which needs
torchvision, and captioning stills does not. The steps are the processor's own: render the
chat template, expand the one image placeholder to as many tokens as the image has merged
patches, and generate.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import WanloraError
from .images import DEFAULT_MAX_SIDE, load_for_captioning

log = logging.getLogger(__name__)

DEFAULT_LOCAL_MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"
IMAGE_PAD = "<|image_pad|>"  # the Qwen-VL chat template's one placeholder per image


class LocalVLMBackend:
    """`caption(image_path, prompt) -> str` with a vision-language model on this machine."""

    def __init__(
        self,
        model: str | None = None,
        *,
        device: str | None = None,
        max_new_tokens: int = 300,
        max_side: int = DEFAULT_MAX_SIDE,
    ):
        import torch
        from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

        self.model_name = model or DEFAULT_LOCAL_MODEL
        self.max_new_tokens = max_new_tokens
        self.max_side = max_side
        if device is None and not torch.cuda.is_available():
            log.warning("no GPU found: captioning on the CPU is slow for a real model")
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32

        source = Path(self.model_name).expanduser()
        where = str(source) if source.is_dir() else self.model_name
        if source.is_dir() and not (source / "config.json").is_file():
            raise WanloraError(
                f"{source}: no config.json, so not a saved model folder",
                "pass the folder that holds config.json, or a hub id from your HF cache",
            )
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(where, local_files_only=True)
            self.image_processor = AutoImageProcessor.from_pretrained(where, local_files_only=True)
            self.model = AutoModelForImageTextToText.from_pretrained(
                where, local_files_only=True, dtype=dtype, device_map=self.device
            )
        except OSError as exc:
            raise WanloraError(
                f"local captioning model {self.model_name!r} not found ({_first_line(exc)})",
                f"download it once with `hf download {DEFAULT_LOCAL_MODEL}` (or the id you "
                "chose), or pass --model /path/to/model-folder",
            ) from None
        except ValueError as exc:  # a folder of some other kind of model
            raise WanloraError(
                f"{self.model_name!r} is not a vision-language model ({_first_line(exc)})",
                f"use a Qwen2-VL / Qwen2.5-VL model such as {DEFAULT_LOCAL_MODEL}",
            ) from None
        image_token_id = getattr(self.model.config, "image_token_id", None)
        if (
            self.tokenizer.chat_template is None
            or image_token_id is None
            or self.tokenizer.convert_tokens_to_ids(IMAGE_PAD) != image_token_id
        ):
            raise WanloraError(
                f"{self.model_name!r} is not a Qwen2-VL-family chat model",
                f"use a Qwen2-VL / Qwen2.5-VL Instruct model such as {DEFAULT_LOCAL_MODEL}",
            )
        self.model.eval()

    def __repr__(self) -> str:
        return f"LocalVLMBackend(model={self.model_name!r}, device={self.device!r})"

    def close(self) -> None:
        pass

    def caption(self, image_path: Path, prompt: str) -> str:
        import torch

        image = load_for_captioning(image_path, self.max_side)
        messages = [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}
        ]
        text = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        vision = self.image_processor(images=[image], return_tensors="pt")
        merge = getattr(self.image_processor, "merge_size", 2)
        n_tokens = int(vision["image_grid_thw"][0].prod()) // (merge * merge)
        text = text.replace(IMAGE_PAD, IMAGE_PAD * n_tokens, 1)
        inputs = self.tokenizer(text, return_tensors="pt")
        inputs.update(vision)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens)
        new_tokens = out[0, inputs["input_ids"].shape[1] :]
        return self.tokenizer.decode(new_tokens, skip_special_tokens=True)


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
