"""`MEDInpaintPipeline`: MEDFE inpainting of photos of any size, in the style of diffusers' inpainting pipelines."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput

from .image_processing_med import (
    DEFAULT_CROP_MARGIN,
    DEFAULT_MAX_PIXELS,
    ImageInput,
    MEDImageProcessor,
    NetworkTile,
    NormalizedImage,
)
from .modeling_med import DEFAULT_MODEL_DIR, SIZE_MULTIPLE, MEDModel
from .patchmatch import (
    DEFAULT_GUIDANCE_WEIGHT,
    DEFAULT_PATCH_SIZE,
    DEFAULT_TEXTURE,
    MARGIN_FRACTION,
    MIN_MARGIN_PATCHES,
    TEXTURES,
    check_patch_size,
    exemplar_fill,
)

HDStrategy = Literal["auto", "crop", "resize", "original"]
HD_STRATEGIES = ("auto", "crop", "resize", "original")
Texture = Literal["exemplar", "none"]
# "original" runs the network on the whole photo; beyond this many pixels its activations outgrow a laptop.
ORIGINAL_MAX_PIXELS = 1024 * 1024


@dataclass
class MEDInpaintPipelineOutput(ImagePipelineOutput):
    """
    Output of [`MEDInpaintPipeline`].

    Args:
        images (`list`): one result per input image, each of the input's size (see `output_type`).
        filled_pixels (`list[int]`): how many pixels of each image were filled (the dilated mask's area); 0 means
            the mask held no hole and the image came back unchanged.
    """

    filled_pixels: list[int] | None = None


@dataclass
class _ImageJob:
    """One image of a call on its way through the pipeline."""

    image: NormalizedImage
    hole: np.ndarray
    tiles: list[NetworkTile]
    result: np.ndarray
    generator: torch.Generator | None


@dataclass(frozen=True)
class _TextureOptions:
    texture: Texture
    patch_size: int
    guidance: float


class MEDInpaintPipeline(DiffusionPipeline):
    r"""
    Inpainting with MEDFE: fills the white area of `mask_image` in `image` and returns the photo at its own size,
    every pixel outside the (dilated) mask bit-identical to the input.

    The output is a function of the known pixels and the mask alone: pixels under the (dilated) mask are erased
    before anything reads the photo, and a pixel resampled for the network counts as known only if every
    full-resolution pixel it is made from is known (see [`MEDImageProcessor`]).

    The network works at a fixed size (`model.config.image_size`, 256 for the released and default models).
    High-resolution photos are handled like IOPaint does:

    - `"crop"`: each group of nearby holes is cut out with `hd_strategy_crop_margin` pixels of context, scaled
      to the working size, inpainted and pasted back (several separate regions get one crop each);
    - `"resize"`: the whole photo is scaled to the working size, and only the hole is pasted back at full size;
    - `"original"`: the photo goes through the network at its own size (padded to a multiple of 64);
    - `"auto"` (default): `"resize"` when the longer side is at most `hd_strategy_crop_trigger_size`,
      `"crop"` above.

    Network inputs of equal size, from one image or several, share a forward pass of up to `batch_size`.
    The progress bar is off by default (a library should be quiet); `set_progress_bar_config(disable=False)`
    shows it.

    Args:
        model ([`MEDModel`]): the MEDFE generator.
    """

    model_cpu_offload_seq = "model"

    def __init__(self, model: MEDModel):
        super().__init__()
        self.register_modules(model=model)
        self.image_processor = MEDImageProcessor(working_size=model.config.image_size, size_multiple=SIZE_MULTIPLE)
        self.set_progress_bar_config(disable=True)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike | None = None, **kwargs):
        """Load a pipeline folder/repo (with `model_index.json`) or a bare `MEDModel` folder/repo.

        Without an argument, the default model shipped inside the package is loaded.
        """
        if pretrained_model_name_or_path is None:
            pretrained_model_name_or_path = DEFAULT_MODEL_DIR
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
        hd_strategy_crop_margin: int = DEFAULT_CROP_MARGIN,
        hd_strategy_crop_trigger_size: int = 800,
        texture: Texture = DEFAULT_TEXTURE,
        texture_patch_size: int = DEFAULT_PATCH_SIZE,
        texture_guidance: float = DEFAULT_GUIDANCE_WEIGHT,
        batch_size: int = 8,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        output_type: Literal["pil", "np", "pt", "input"] = "pil",
        return_dict: bool = True,
        generator: torch.Generator | list[torch.Generator] | None = None,
    ) -> MEDInpaintPipelineOutput | tuple:
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
                Feather the seam over this many pixels. Then pixels in a band around the mask change too (mixed
                with the prediction, which never depends on what the mask hides); with 0 every pixel outside the
                mask is returned bit-identical.
            hd_strategy (`str`, defaults to `"auto"`): `"auto"`, `"crop"`, `"resize"` or `"original"` (see class).
            hd_strategy_crop_margin (`int`, defaults to 128): context in pixels around each masked region.
            hd_strategy_crop_trigger_size (`int`, defaults to 800): longest side above which `"auto"` crops.
            texture (`str`, defaults to `"exemplar"`): `"exemplar"` re-synthesises the hole at the photo's full
                resolution from patches of its own known pixels, steered by the network's prediction
                (`med_hf.patchmatch.exemplar_fill`), so the fill carries the photo's texture; `"none"` returns
                the network's smooth prediction, upscaled to the photo.
            texture_patch_size (`int`, defaults to 7): side of the patches, odd.
            texture_guidance (`float`, defaults to `med_hf.patchmatch.DEFAULT_GUIDANCE_WEIGHT`): how strongly
                patches must agree with the network's structure, and how much of the network's low frequencies
                (colours, shading) the fill takes (all from 1 up; 0 = patches agree only with their neighbours).
            batch_size (`int`, defaults to 8): most network inputs per forward pass.
            max_pixels (`int`, *optional*, defaults to 64,000,000): larger images are refused before they are
                decoded (`ImageTooLargeError`); `None` for no limit.
            output_type (`str`, defaults to `"pil"`): `"pil"` (the input's mode family), `"np"` (float32 HWC in
                [0, 1]), `"pt"` (float32 CHW in [0, 1]) or `"input"` (the input's own type, dtype and layout).
            return_dict (`bool`, defaults to `True`): return a [`MEDInpaintPipelineOutput`] instead of a tuple.
            generator (`torch.Generator` or a list of one per image, *optional*): seeds the texture stage's random
                choices; the same seed gives the same pixels. Without one, a generator seeded with 0 is used, so
                results are reproducible by default. The network itself is deterministic.

        Returns:
            [`MEDInpaintPipelineOutput`] whose `images` holds one result per input image, or `(images,)`.
        """
        if hd_strategy not in HD_STRATEGIES:
            raise ValueError(f"hd_strategy must be one of {', '.join(HD_STRATEGIES)}; got {hd_strategy!r}")
        if mask_dilation < 0 or mask_blur < 0:
            raise ValueError("mask_dilation and mask_blur must be >= 0")
        if mask_blur > hd_strategy_crop_margin:
            raise ValueError(
                f"mask_blur ({mask_blur}) cannot exceed hd_strategy_crop_margin ({hd_strategy_crop_margin})"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if texture not in TEXTURES:
            raise ValueError(f"texture must be one of {', '.join(TEXTURES)}; got {texture!r}")
        check_patch_size(texture_patch_size, "texture_patch_size")
        if not texture_guidance >= 0:  # also refuses NaN
            raise ValueError(f"texture_guidance must be >= 0, got {texture_guidance}")
        images, masks = _as_list(image), _as_list(mask_image)
        if len(images) != len(masks):
            raise ValueError(f"got {len(images)} images but {len(masks)} masks")
        generators = _per_image(generator, len(images))

        processor = self.image_processor
        jobs = []
        for item, mask_item, item_generator in zip(images, masks, generators, strict=True):
            normalized = processor.preprocess(item, max_pixels=max_pixels)
            hole = processor.preprocess_mask(mask_item, normalized, dilation=mask_dilation, max_pixels=max_pixels)
            strategy = self._resolve_strategy(hd_strategy, normalized, hd_strategy_crop_trigger_size)
            tiles = processor.tiles(hole, strategy, hd_strategy_crop_margin)
            jobs.append(_ImageJob(normalized, hole, tiles, normalized.pixels.copy(), item_generator))
        self._fill(jobs, mask_blur, batch_size, _TextureOptions(texture, texture_patch_size, texture_guidance))

        results = [processor.postprocess(job.result, job.image, output_type) for job in jobs]
        filled = [int(job.hole.sum()) for job in jobs]
        if not return_dict:
            return (results,)
        return MEDInpaintPipelineOutput(images=results, filled_pixels=filled)

    @staticmethod
    def _resolve_strategy(strategy: HDStrategy, image: NormalizedImage, trigger: int) -> str:
        width, height = image.size
        if strategy == "auto":
            return "resize" if max(width, height) <= trigger else "crop"
        if strategy == "original" and width * height > ORIGINAL_MAX_PIXELS:
            raise ValueError(
                f"hd_strategy='original' runs the network on all {width}x{height} pixels, more than "
                f"{ORIGINAL_MAX_PIXELS:,}; use 'crop' or 'resize' for photos this large"
            )
        return strategy

    def _fill(self, jobs: list[_ImageJob], blur: float, batch_size: int, texture: _TextureOptions) -> None:
        """Run every tile of every job through the network (and the texture stage) and composite the fills into
        `job.result`.

        Tiles of equal network size share forward passes, whichever image they come from.
        """
        processor = self.image_processor
        groups: dict[tuple[int, int], list[tuple[_ImageJob, NetworkTile]]] = {}
        for job in jobs:
            for tile in job.tiles:
                groups.setdefault(tile.size, []).append((job, tile))
        with self.progress_bar(total=sum(len(job.tiles) for job in jobs)) as progress:
            for group in groups.values():
                for start in range(0, len(group), batch_size):
                    chunk = group[start : start + batch_size]
                    inputs = [processor.tile_input(job.image.rgb, job.hole, tile) for job, tile in chunk]
                    predictions = self.predict(np.stack([i[0] for i in inputs]), np.stack([i[1] for i in inputs]))
                    for (job, tile), prediction in zip(chunk, predictions, strict=True):
                        fill = processor.tile_output(prediction, tile)
                        if texture.texture == "exemplar":
                            fill = self._synthesise_texture(job, tile, fill, texture)
                        rows, cols = tile.box.slices
                        job.result[rows, cols] = processor.composite(job.image, fill, job.hole, blur, tile.box)
                        progress.update()

    def _synthesise_texture(
        self, job: _ImageJob, tile: NetworkTile, guide: np.ndarray, options: _TextureOptions
    ) -> np.ndarray:
        """`guide` with the tile's hole re-synthesised at full resolution from the tile's known pixels.

        Each group of nearby holes is synthesised in its own box with the context its patches come from, so two
        distant holes do not make one box spanning the photo. Only known pixels reach the texture stage
        (`known_pixels` erases the hole), and its sources are known patches, so the fill still depends on the
        known pixels and the mask alone.
        """
        tile_rows, tile_cols = tile.box.slices
        hole = job.hole[tile_rows, tile_cols]
        known = self.image_processor.known_pixels(job.image, job.hole, tile.box)
        fill = guide.copy()
        regions = self.image_processor.texture_regions(
            hole, margin=MIN_MARGIN_PATCHES * options.patch_size, relative_margin=MARGIN_FRACTION
        )

        def as_batch(array: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)[None].to(self.device)

        for region in regions:
            rows, cols = region.slices
            filled = exemplar_fill(
                as_batch(known[rows, cols]),
                as_batch(hole[rows, cols, None]),
                as_batch(guide[rows, cols]),
                patch_size=options.patch_size,
                guidance_weight=options.guidance,
                generator=job.generator,
            )
            synthesised = filled[0].permute(1, 2, 0).float().cpu().numpy()
            fill[rows, cols] = np.where(hole[rows, cols, None], synthesised, fill[rows, cols])
        # Outside the hole the fill stays the network's prediction, which `mask_blur` feathers into the photo.
        return fill

    def predict(self, rgb: np.ndarray, hole: np.ndarray) -> np.ndarray:
        """Run the network: float RGB (B, h, w, 3) in [0, 1] and bool holes (B, h, w) -> float (B, h, w, 3) in [0, 1].

        `h` and `w` must be multiples of 64. The output is the raw reconstruction; callers composite it.

        Raises:
            `FloatingPointError`: the network's output holds NaN or infinite values (never passed on silently).
        """
        model = self.model
        dtype = next(model.parameters()).dtype
        pixel_values = torch.from_numpy(rgb).permute(0, 3, 1, 2).to(self.device, dtype) * 2 - 1
        mask = torch.from_numpy(hole)[:, None].to(self.device, dtype)
        reconstruction = model(pixel_values=pixel_values, mask=mask).reconstruction.float()
        if not torch.isfinite(reconstruction).all():
            raise FloatingPointError(
                "the model's output holds NaN or infinite values (numerical overflow, e.g. in float16?); "
                "nothing was written"
            )
        return ((reconstruction + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()


def _per_image(generator: torch.Generator | list[torch.Generator] | None, count: int) -> list:
    """One generator per image: a list as given (checked), a single generator shared in image order, or fresh
    generators seeded with 0."""
    if isinstance(generator, list | tuple):
        if len(generator) != count:
            raise ValueError(f"got {len(generator)} generators for {count} images; pass one per image, or one")
        return list(generator)
    if generator is None:
        return [torch.Generator().manual_seed(0) for _ in range(count)]
    return [generator] * count


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


__all__ = ["DEFAULT_TEXTURE", "HD_STRATEGIES", "TEXTURES", "MEDInpaintPipeline", "MEDInpaintPipelineOutput"]
