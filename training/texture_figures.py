#!/usr/bin/env python
"""Pictures of the texture stage: the network's smooth fill next to the texture fill, on held-out photos.

    python training/texture_figures.py \
        --val_dir ../shared/data/bsds500/val --mask_dir ../shared/data/masks/irregular \
        --output_dir outputs/evaluation/default

Writes into ``--output_dir`` (each file atomically):

- ``texture_examples.png``: for several validation photos and hole sizes (the evaluation protocol's photos and
  masks, 256x256), one row each of input (hole in white) / smooth (``texture="none"``) / texture
  (``texture="exemplar"``, the default) / ground truth;
- ``texture_crops.png``: real photos at their own resolution (scikit-image's ``chelsea`` and ``rocket``, see
  ``CROP_CASES``: one where texture helps, one where it fails) with an object-sized hole, inpainted with the
  default settings; the whole photo with the hole and the crop outlined, then the same full-resolution crop of
  input / smooth / texture / photo, enlarged 3x with nearest neighbours so that single pixels show.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import skimage.data
import torch
from PIL import Image, ImageDraw

from med_hf.atomic_files import write_bytes
from med_hf.evaluation import list_images, mask_path, masked_input, protocol_image, protocol_mask
from med_hf.evaluation.figures import figure_png
from med_hf.pipeline_med import MEDInpaintPipeline

COLUMNS = ("input", 'smooth (texture="none")', "texture (default)", "ground truth")
# Photos with grass, water, rock, foliage and buildings, at the protocol's three largest-gap hole sizes.
DEFAULT_IMAGES = (3, 21, 48, 70)
DEFAULT_BUCKETS = (1, 3, 5)
CROP_ZOOM = 3
CROP_SIZE = 120


def fills(pipe: MEDInpaintPipeline, image: np.ndarray, hole: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(smooth, texture) uint8 results of the pipeline with its default settings otherwise."""
    results = []
    for texture in ("none", "exemplar"):
        output = pipe(
            image=image,
            mask_image=hole,
            texture=texture,
            output_type="input",
            generator=torch.Generator().manual_seed(seed),
        )
        results.append(output.images[0])
    return results[0], results[1]


def examples_figure(pipe: MEDInpaintPipeline, val_dir: Path, mask_dir: Path, images: list[int], buckets: list[int]):
    import matplotlib.pyplot as plt

    paths = list_images(val_dir)
    rows = [(index, bucket) for index in images for bucket in buckets]
    figure, axes = plt.subplots(len(rows), len(COLUMNS), figsize=(2.6 * len(COLUMNS), 2.6 * len(rows)), squeeze=False)
    for row, (index, bucket) in enumerate(rows):
        target = protocol_image(paths[index])
        hole = protocol_mask(mask_path(mask_dir, index, bucket))
        smooth, texture = fills(pipe, masked_input(target, hole), hole, seed=index)
        shown = masked_input(target, hole).copy()
        shown[hole] = 255
        for column, picture in enumerate((shown, smooth, texture, target)):
            axis = axes[row, column]
            axis.imshow(picture, interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(COLUMNS[column], fontsize=10)
        axes[row, 0].set_ylabel(f"{paths[index].stem}\nhole {hole.mean():.0%}", fontsize=9)
    figure.tight_layout()
    return figure


# (scikit-image photo, centre of the hole as fractions of width and height, what it shows). Both are real photos
# shipped with scikit-image (the cat: public domain; the rocket: NASA, public domain), the largest natural ones
# available offline.
CROP_CASES = (
    ("chelsea", (0.45, 0.6), "fur: the texture fill\ncarries the photo's grain"),
    ("rocket", (0.25, 0.8), "lights, towers: the texture fill\npastes fragments (a failure)"),
)


def object_hole(width: int, height: int, centre: tuple[float, float]) -> np.ndarray:
    """An object-sized irregular hole (~5-7 % of the photo) around `centre` (fractions of width and height)."""
    mask = Image.new("L", (width, height), 0)
    centre_x, centre_y = centre[0] * width, centre[1] * height
    angles = np.linspace(0, 2 * np.pi, 90, endpoint=False)
    radius = 1 + 0.2 * np.sin(3 * angles) + 0.1 * np.cos(7 * angles)
    points = [
        (centre_x + 0.11 * width * r * np.cos(a), centre_y + 0.14 * height * r * np.sin(a))
        for a, r in zip(angles, radius, strict=True)
    ]
    ImageDraw.Draw(mask).polygon(points, fill=255)
    return np.asarray(mask) > 127


def crops_figure(pipe: MEDInpaintPipeline):
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(
        len(CROP_CASES), 1 + len(COLUMNS), figsize=(3.0 * (1 + len(COLUMNS)), 3.2 * len(CROP_CASES)), squeeze=False
    )
    for row, (name, centre, caption) in enumerate(CROP_CASES):
        photo = getattr(skimage.data, name)()
        height, width = photo.shape[:2]
        hole = object_hole(width, height, centre)
        smooth, texture = fills(pipe, photo, hole, seed=0)
        rows, columns = np.nonzero(hole)
        top = int(np.clip(rows.mean() - CROP_SIZE // 2, 0, height - CROP_SIZE))
        left = int(np.clip(columns.mean() - CROP_SIZE // 2, 0, width - CROP_SIZE))
        window = (slice(top, top + CROP_SIZE), slice(left, left + CROP_SIZE))
        shown = photo.copy()
        shown[hole] = 255
        overview = axes[row, 0]
        overview.imshow(shown)
        overview.add_patch(
            plt.Rectangle((left, top), CROP_SIZE, CROP_SIZE, fill=False, edgecolor="#ff2d7a", linewidth=1.5)
        )
        overview.set_title(f"{width}x{height}, hole {hole.mean():.0%}", fontsize=10)
        overview.set_xlabel(caption, fontsize=9, loc="left")
        overview.set_xticks([])
        overview.set_yticks([])
        for column, picture in enumerate((shown, smooth, texture, photo), start=1):
            crop = picture[window].repeat(CROP_ZOOM, axis=0).repeat(CROP_ZOOM, axis=1)
            axes[row, column].imshow(crop, interpolation="nearest")
            axes[row, column].set_title(f"{COLUMNS[column - 1]}, crop {CROP_ZOOM}x", fontsize=10)
            axes[row, column].axis("off")
    figure.tight_layout()
    return figure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--val_dir", type=Path, required=True)
    parser.add_argument("--mask_dir", type=Path, required=True)
    parser.add_argument("--output_dir", type=Path, required=True)
    parser.add_argument("--model", help="model folder or Hub repo id (default: the shipped default model)")
    parser.add_argument("--images", type=int, nargs="+", default=list(DEFAULT_IMAGES), help="val photo indices")
    parser.add_argument("--buckets", type=int, nargs="+", default=list(DEFAULT_BUCKETS), help="hole-ratio buckets")
    args = parser.parse_args()

    pipe = MEDInpaintPipeline.from_pretrained(args.model) if args.model else MEDInpaintPipeline.from_pretrained()
    pipe.set_progress_bar_config(disable=True)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    figures = {
        "texture_examples.png": examples_figure(pipe, args.val_dir, args.mask_dir, args.images, args.buckets),
        "texture_crops.png": crops_figure(pipe),
    }
    for name, figure in figures.items():
        write_bytes(args.output_dir / name, figure_png(figure))
        print(f"wrote {args.output_dir / name}")


if __name__ == "__main__":
    main()
