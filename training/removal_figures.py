#!/usr/bin/env python
"""Pictures of real object removals: val photos at their own size, one of their own objects painted out.

    python training/removal_figures.py \
        --val_dir ../shared/data/bsds500/val --segmentation_dir ../shared/data/bsds500/segmentations/val \
        --output_dir outputs/evaluation/default

Each photo loses one of its own objects (`med_hf.evaluation.object_masks.own_object`: the largest region of
3-15 % of the photo that touches little of the border, dilated 6 px), and is filled by the default pipeline,
the `pypatchmatch` package (content-aware fill, 7x7 patches), the smooth network fill (`texture="none"`) and
OpenCV's Telea. Nothing says what lay behind the object: the pictures are there to be looked at.

Writes into ``--output_dir`` (each file atomically):

- ``removal_examples.png``: one row per photo, at full resolution, of input (hole in white) / the four fills;
- with ``--blind_dir``, also one folder per photo with the four fills as ``A.png`` … ``D.png`` in a shuffled
  order, the input as ``input.png`` and the key in ``key.json``, to be judged before unblinding.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from med_hf.atomic_files import write_bytes, write_text
from med_hf.evaluation import list_images, pypatchmatch, telea
from med_hf.evaluation.object_masks import own_object
from med_hf.pipeline_med import MEDInpaintPipeline

DEFAULT_COUNT = 8
LABEL_HEIGHT = 22
GAP = 4


def fill_methods(pipe: MEDInpaintPipeline) -> dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]]:
    """Name -> fill(image uint8 (h, w, 3), hole bool (h, w)) -> uint8 (h, w, 3), in the figure's column order."""

    def pipeline(texture: str) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        def fill(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
            generator = torch.Generator().manual_seed(0)
            return pipe(image=image, mask_image=hole, texture=texture, output_type="input", generator=generator).images[
                0
            ]

        return fill

    return {
        "default": pipeline("exemplar"),
        "pypatchmatch": pypatchmatch,
        'smooth (texture="none")': pipeline("none"),
        "Telea": telea,
    }


def removal_cases(
    val_dir: Path, segmentation_dir: Path, count: int, skip: int = 0
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(photo id, photo uint8, hole) for ``count`` val photos (in name order) that have an object to remove, after
    the first ``skip`` of them."""
    cases = []
    for path in list_images(val_dir):
        hole = own_object(segmentation_dir, path.stem)
        if hole is None:
            continue
        if skip > 0:
            skip -= 1
            continue
        with Image.open(path) as image:
            photo = np.asarray(image.convert("RGB"))
        if photo.shape[:2] != hole.shape:
            raise ValueError(f"{path.name} is {photo.shape[1]}x{photo.shape[0]} but its segmentation is not")
        cases.append((path.stem, photo, hole))
        if len(cases) == count:
            break
    return cases


def labelled(picture: np.ndarray, text: str) -> Image.Image:
    """The picture at its own size under a caption strip."""
    height, width = picture.shape[:2]
    tile = Image.new("RGB", (width, height + LABEL_HEIGHT), "white")
    tile.paste(Image.fromarray(picture), (0, LABEL_HEIGHT))
    ImageDraw.Draw(tile).text((4, 4), text, fill="black")
    return tile


def grid(rows: list[list[Image.Image]]) -> Image.Image:
    """Tiles in rows, left-aligned, GAP pixels apart."""
    width = max(sum(tile.width for tile in row) + GAP * (len(row) - 1) for row in rows)
    height = sum(max(tile.height for tile in row) for row in rows) + GAP * (len(rows) - 1)
    canvas = Image.new("RGB", (width, height), "white")
    top = 0
    for row in rows:
        left = 0
        for tile in row:
            canvas.paste(tile, (left, top))
            left += tile.width + GAP
        top += max(tile.height for tile in row) + GAP
    return canvas


def png(image: Image.Image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--val_dir", type=Path, required=True)
    parser.add_argument("--segmentation_dir", type=Path, required=True, help="the val photos' segmentations")
    parser.add_argument("--output_dir", type=Path, required=True)
    parser.add_argument("--model", help="model folder or Hub repo id (default: the shipped default model)")
    parser.add_argument("--count", type=int, default=DEFAULT_COUNT, help="how many photos")
    parser.add_argument("--skip", type=int, default=0, help="leave out the first N photos that qualify")
    parser.add_argument("--blind_dir", type=Path, help="also write shuffled fills here for a blind comparison")
    parser.add_argument("--seed", type=int, default=0, help="seeds the blind order")
    args = parser.parse_args()
    if args.count < 1 or args.skip < 0:
        parser.error("--count must be at least 1 and --skip at least 0")
    cases = removal_cases(args.val_dir, args.segmentation_dir, args.count, args.skip)
    if not cases:
        parser.error(f"no photo of {args.val_dir} has an object to remove in {args.segmentation_dir}")

    pipe = MEDInpaintPipeline.from_pretrained(args.model) if args.model else MEDInpaintPipeline.from_pretrained()
    pipe.set_progress_bar_config(disable=True)
    methods = fill_methods(pipe)
    rng = np.random.default_rng(args.seed)
    rows = []
    for photo_id, photo, hole in cases:
        masked = np.where(hole[..., None], np.uint8(0), photo)
        fills = {name: np.where(hole[..., None], fill(masked, hole), photo) for name, fill in methods.items()}
        shown = np.where(hole[..., None], np.uint8(255), photo)
        row = [labelled(shown, f"{photo_id}: hole {hole.mean():.0%}")]
        row += [labelled(picture, name) for name, picture in fills.items()]
        rows.append(row)
        print(f"{photo_id}: hole {hole.mean():.1%}")
        if args.blind_dir is not None:
            folder = args.blind_dir / photo_id
            folder.mkdir(parents=True, exist_ok=True)
            order = rng.permutation(len(fills))
            key = {}
            for letter, k in zip("ABCDEFGH", order, strict=False):
                name = list(fills)[k]
                key[letter] = name
                write_bytes(folder / f"{letter}.png", png(Image.fromarray(fills[name])))
            write_bytes(folder / "input.png", png(Image.fromarray(shown)))
            write_text(folder / "key.json", json.dumps(key, indent=2))
    args.output_dir.mkdir(parents=True, exist_ok=True)
    write_bytes(args.output_dir / "removal_examples.png", png(grid(rows)))
    print(f"wrote {args.output_dir / 'removal_examples.png'}")


if __name__ == "__main__":
    main()
