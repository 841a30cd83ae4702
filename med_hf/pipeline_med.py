"""`MEDInpaintPipeline`: MEDFE inpainting of photos of any size, in the style of diffusers' inpainting pipelines."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput

from .image_processing_med import (
    CropBox,
    ImageInput,
    MEDImageProcessor,
    NormalizedImage,
    composite,
    network_size,
    resize_image,
    resize_mask,
)
from .modeling_med import SIZE_MULTIPLE, MEDModel

DEFAULT_MODEL = Path(__file__).parent / "default_model"
HDStrategy = Literal["auto", "crop", "resize", "original"]
HD_STRATEGIES = ("auto", "crop", "resize", "original")
# "original" runs the network on the whole photo; beyond this many pixels its activations outgrow a laptop.
ORIGINAL_MAX_PIXELS = 1024 * 1024


class MEDInpaintPipeline(DiffusionPipeline):
    r"""
    Inpainting with MEDFE: fills the white area of `mask_image` in `image` and returns the photo at its own size,
    every pixel outside the (dilated) mask bit-identical to the input.

    The network works at a fixed size (`model.config.image_size`, 256 for the released and default models).
    High-resolution photos are handled like IOPaint does:

    - `"crop"`: each group of nearby holes is cut out with `hd_strategy_crop_margin` pixels of context, scaled
      to the working size, inpainted and pasted back (several separate regions get one crop each);
    - `"resize"`: the whole photo is scaled to the working size, and only the hole is pasted back at full size;
    - `"original"`: the photo goes through the network at its own size (padded to a multiple of 64);
    - `"auto"` (default): `"resize"` when the longer side is at most `hd_strategy_crop_trigger_size`,
      `"crop"` above.

    Args:
        model ([`MEDModel`]): the MEDFE generator.
    """

    model_cpu_offload_seq = "model"

    def __init__(self, model: MEDModel):
        super().__init__()
        self.register_modules(model=model)
        self.image_processor = MEDImageProcessor(working_size=model.config.image_size, size_multiple=SIZE_MULTIPLE)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike | None = None, **kwargs):
        """Load a pipeline folder/repo (with `model_index.json`) or a bare `MEDModel` folder/repo.

        Without an argument, the default model shipped inside the package is loaded.
        """
        if pretrained_model_name_or_path is None:
            if not (DEFAULT_MODEL / "config.json").is_file():
                raise OSError(f"the default model is missing from this installation ({DEFAULT_MODEL})")
            pretrained_model_name_or_path = DEFAULT_MODEL
        if _has_model_index(pretrained_model_name_or_path, kwargs):
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        model_kwargs = {
            key: kwargs[key]
            for key in ("revision", "cache_dir", "token", "local_files_only", "subfolder")
            if kwargs.get(key) is not None
        }
        dtype = kwargs.get("torch_dtype", kwargs.get("dtype"))
        model = MEDModel.from_pretrained(pretrained_model_name_or_path, dtype=dtype or torch.float32, **model_kwargs)
        return cls(model=model.eval())

    @torch.inference_mode()
    def __call__(
        self,
        image: ImageInput | list[ImageInput],
        mask_image: ImageInput | list[ImageInput],
        mask_dilation: int = 0,
        mask_blur: float = 0,
        hd_strategy: HDStrategy = "auto",
        hd_strategy_crop_margin: int = 128,
        hd_strategy_crop_trigger_size: int = 800,
        output_type: Literal["pil", "np", "pt"] = "pil",
        return_dict: bool = True,
        generator: torch.Generator | None = None,
    ) -> ImagePipelineOutput | tuple:
        r"""
        Args:
            image (`PIL.Image.Image`, `np.ndarray`, `torch.Tensor`, path, or a list of them):
                Photos of any size: PIL in any mode (RGB, RGBA, L, P, 16-bit, EXIF-rotated JPEG), numpy HWC or
                torch CHW arrays (uint8, uint16, or float in [0, 1]).
            mask_image (same types, or a list matching `image`):
                White (> 127 in grayscale) = area to fill; must have the image's size.
            mask_dilation (`int`, defaults to 0):
                Grow the mask by this many pixels first, so it surely covers the object's edge.
            mask_blur (`float`, defaults to 0):
                Feather the seam over this many pixels. Then pixels in a band around the mask change too;
                with 0 every pixel outside the mask is returned bit-identical.
            hd_strategy (`str`, defaults to `"auto"`): `"auto"`, `"crop"`, `"resize"` or `"original"` (see class).
            hd_strategy_crop_margin (`int`, defaults to 128): context in pixels around each masked region.
            hd_strategy_crop_trigger_size (`int`, defaults to 800): longest side above which `"auto"` crops.
            output_type (`str`, defaults to `"pil"`): `"pil"` (the input's mode family), `"np"` (float32 HWC in
                [0, 1]) or `"pt"` (float32 CHW in [0, 1]).
            return_dict (`bool`, defaults to `True`): return an [`ImagePipelineOutput`] instead of a tuple.
            generator: accepted for API compatibility; MEDFE is deterministic.

        Returns:
            [`ImagePipelineOutput`] whose `images` holds one result per input image, or `(images,)`.
        """
        if hd_strategy not in HD_STRATEGIES:
            raise ValueError(f"hd_strategy must be one of {', '.join(HD_STRATEGIES)}; got {hd_strategy!r}")
        if mask_dilation < 0 or mask_blur < 0:
            raise ValueError("mask_dilation and mask_blur must be >= 0")
        if mask_blur > hd_strategy_crop_margin:
            raise ValueError(
                f"mask_blur ({mask_blur}) cannot exceed hd_strategy_crop_margin ({hd_strategy_crop_margin})"
            )
        images, masks = _as_list(image), _as_list(mask_image)
        if len(images) != len(masks):
            raise ValueError(f"got {len(images)} images but {len(masks)} masks")

        processor = dataclasses.replace(self.image_processor, crop_margin=hd_strategy_crop_margin)
        results = []
        for item, mask_item in zip(images, masks, strict=True):
            normalized = processor.preprocess(item)
            hole = processor.preprocess_mask(mask_item, normalized, dilation=mask_dilation)
            pixels = self._inpaint(processor, normalized, hole, mask_blur, hd_strategy, hd_strategy_crop_trigger_size)
            results.append(processor.postprocess(pixels, normalized, output_type))
        if not return_dict:
            return (results,)
        return ImagePipelineOutput(images=results)

    def _inpaint(
        self,
        processor: MEDImageProcessor,
        image: NormalizedImage,
        hole: np.ndarray,
        blur: float,
        strategy: HDStrategy,
        trigger: int,
    ) -> np.ndarray:
        """The input's own pixels with the hole filled (same shape and dtype as `image.pixels`)."""
        if not hole.any():
            return image.pixels.copy()
        width, height = image.size
        if strategy == "auto":
            strategy = "resize" if max(width, height) <= trigger else "crop"
        if strategy == "crop":
            return self._inpaint_crops(processor, image, hole, blur)
        if strategy == "resize":
            size = network_size(width, height, processor.working_size, SIZE_MULTIPLE)
            small = resize_image(image.rgb, size, processor.resample)
            small_hole = resize_mask(hole, size, processor.mask_resize)
            prediction = self.predict(small[None], small_hole[None])[0]
            return composite(image.pixels, resize_image(prediction, (width, height)), hole, blur)
        if width * height > ORIGINAL_MAX_PIXELS:
            raise ValueError(
                f"hd_strategy='original' runs the network on all {width}x{height} pixels, more than "
                f"{ORIGINAL_MAX_PIXELS:,}; use 'crop' or 'resize' for photos this large"
            )
        return composite(image.pixels, self._predict_padded(image.rgb, hole), hole, blur)

    def _inpaint_crops(
        self, processor: MEDImageProcessor, image: NormalizedImage, hole: np.ndarray, blur: float
    ) -> np.ndarray:
        """Inpaint each crop box on its own; boxes hold every hole pixel plus the blur band, and never overlap."""
        boxes = processor.crop_boxes(hole)
        result = image.pixels.copy()
        # Crops of equal network size share a forward pass.
        groups: dict[tuple[int, int], list[tuple[CropBox, np.ndarray, np.ndarray]]] = {}
        for box in boxes:
            rgb, box_hole = processor.crop_for_network(image, hole, box)
            groups.setdefault(rgb.shape[:2], []).append((box, rgb, box_hole))
        with self.progress_bar(total=len(boxes)) as progress:
            for group in groups.values():
                predictions = self.predict(np.stack([g[1] for g in group]), np.stack([g[2] for g in group]))
                for (box, _, _), prediction in zip(group, predictions, strict=True):
                    rows, cols = box.slices
                    result[rows, cols] = composite(
                        image.pixels[rows, cols], processor.uncrop_prediction(prediction, box), hole[rows, cols], blur
                    )
                    progress.update()
        return result

    def _predict_padded(self, rgb: np.ndarray, hole: np.ndarray) -> np.ndarray:
        height, width = hole.shape
        pad_h, pad_w = -height % SIZE_MULTIPLE, -width % SIZE_MULTIPLE
        padded = np.pad(rgb, ((0, pad_h), (0, pad_w), (0, 0)), mode="reflect" if min(height, width) > 1 else "edge")
        padded_hole = np.pad(hole, ((0, pad_h), (0, pad_w)))
        return self.predict(padded[None], padded_hole[None])[0, :height, :width]

    def predict(self, rgb: np.ndarray, hole: np.ndarray) -> np.ndarray:
        """Run the network: float RGB (B, h, w, 3) in [0, 1] and bool holes (B, h, w) -> float (B, h, w, 3) in [0, 1].

        `h` and `w` must be multiples of 64. The output is the raw reconstruction; callers composite it.
        """
        model = self.model
        dtype = next(model.parameters()).dtype
        pixel_values = torch.from_numpy(rgb).permute(0, 3, 1, 2).to(self.device, dtype) * 2 - 1
        mask = torch.from_numpy(hole)[:, None].to(self.device, dtype)
        reconstruction = model(pixel_values=pixel_values, mask=mask).reconstruction
        return ((reconstruction.float() + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()


def _as_list(value) -> list:
    if isinstance(value, list | tuple):
        return list(value)
    if isinstance(value, torch.Tensor) and value.ndim == 4:
        return list(value)
    return [value]


def _has_model_index(path_or_repo: str | os.PathLike, kwargs: dict) -> bool:
    """Whether `path_or_repo` is a pipeline (with `model_index.json`) rather than a bare model."""
    path = Path(path_or_repo)
    if path.is_dir():
        return (path / "model_index.json").is_file()
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    try:
        hf_hub_download(
            str(path_or_repo),
            "model_index.json",
            revision=kwargs.get("revision"),
            cache_dir=kwargs.get("cache_dir"),
            token=kwargs.get("token"),
        )
    except (EntryNotFoundError, LocalEntryNotFoundError):
        return False
    return True


__all__ = ["HD_STRATEGIES", "MEDInpaintPipeline"]
