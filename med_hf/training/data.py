"""Training data for MEDFE: streamed 🤗 datasets, random crops, hole masks and RTV structure targets.

Every random choice of a sample (crop, flip, scale, mask) is drawn from a generator seeded by
`(seed, rank, epoch, index in epoch)`, never from global state. A resumed run therefore rebuilds exactly the
batches an uninterrupted run would have seen, whatever happened to the process in between.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..atomic_files import atomic_file
from .masks import MaskSampler
from .rtv import BORDERS, DEFAULT_BORDER, structure_image


def load_streaming_dataset(
    dataset_name: str | None,
    train_data_dir: str | None,
    dataset_config_name: str | None = None,
    split: str = "train",
    cache_dir: str | None = None,
):
    """A streaming `datasets.IterableDataset`: a Hub id / builder name (`dataset_name`) or a local image folder."""
    from datasets import load_dataset

    if dataset_name:
        return load_dataset(
            dataset_name,
            dataset_config_name,
            data_dir=train_data_dir,
            split=split,
            streaming=True,
            cache_dir=cache_dir,
        )
    if train_data_dir:
        if not Path(train_data_dir).is_dir():
            raise FileNotFoundError(f"--train_data_dir {train_data_dir} is not a folder")
        return load_dataset("imagefolder", data_dir=train_data_dir, split=split, streaming=True, cache_dir=cache_dir)
    raise ValueError("give --dataset_name or --train_data_dir")


def shard_for_process(dataset, rank: int, world_size: int, seed: int, shuffle_buffer_size: int):
    """Split a streamed dataset between processes, then shuffle (shard order + a buffer, reseeded per epoch)."""
    from datasets.distributed import split_dataset_by_node

    if world_size > 1:
        dataset = split_dataset_by_node(dataset, rank=rank, world_size=world_size)
    if shuffle_buffer_size > 1:
        dataset = dataset.shuffle(seed=seed, buffer_size=shuffle_buffer_size)
    return dataset


class StructureCache:
    """RTV structure images keyed by image content, so each training photo is smoothed once per scale.

    RTV takes a sizeable fraction of a second per photo; the cache (in memory, optionally mirrored on disk
    so later runs start warm) keeps it from starving the training loop.

    ``border`` is the RTV blur border (:func:`med_hf.training.rtv.rtv_smooth`; ``"zero"``, the authors', by default).
    It is part of the key, so a disk cache filled with another border is never reused for this one (files
    written before the border was in the key, all made with the replicated border, are ignored too).
    """

    def __init__(self, cache_dir: str | Path | None = None, max_items: int = 4096, border: str = DEFAULT_BORDER):
        if border not in BORDERS:
            raise ValueError(f"border must be one of {sorted(BORDERS)}, got {border!r}.")
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.max_items = max_items
        self.border = border
        self._memory: dict[str, Image.Image] = {}
        if self.cache_dir:
            self.cache_dir.mkdir(parents=True, exist_ok=True)

    def key(self, image: Image.Image) -> str:
        """Cache key of ``image``: its pixels, its size and the RTV recipe (border included)."""
        recipe = f"rtv border={self.border}".encode()
        return hashlib.sha1(image.tobytes() + repr(image.size).encode() + recipe).hexdigest()

    def __call__(self, image: Image.Image) -> Image.Image:
        key = self.key(image)
        if key in self._memory:
            return self._memory[key]
        path = self.cache_dir / f"{key}.png" if self.cache_dir else None
        if path is not None and path.is_file():
            structure = Image.open(path).convert("RGB")
        else:
            structure = structure_image(image, border=self.border)
            if path is not None:
                with atomic_file(path) as handle:
                    structure.save(handle, format="PNG")
        if len(self._memory) < self.max_items:
            self._memory[key] = structure
        return structure


@dataclass
class SampleTransform:
    """Photo -> (image, structure, mask) training tensors at `resolution` x `resolution`.

    The photo's shorter side is resized to `resolution * s` with `s` uniform in `scale_range` (1.0 matches the
    evaluation protocol's 481x321 -> 256 scaling closely), then a random square crop and a random flip.
    """

    resolution: int
    mask_sampler: MaskSampler
    scale_range: tuple[float, float] = (1.0, 1.0)
    random_flip: bool = True
    structure_cache: StructureCache | None = field(default_factory=StructureCache)

    def __call__(self, photo: Image.Image, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        photo = photo.convert("RGB")
        scale = rng.uniform(*self.scale_range)
        # A few discrete scales, so the structure cache stays small.
        short_side = int(round(self.resolution * scale / 8)) * 8
        width, height = photo.size
        ratio = max(short_side / min(width, height), self.resolution / min(width, height))
        size = (max(self.resolution, round(width * ratio)), max(self.resolution, round(height * ratio)))
        photo = photo.resize(size, Image.Resampling.LANCZOS)
        left = int(rng.integers(0, size[0] - self.resolution + 1))
        top = int(rng.integers(0, size[1] - self.resolution + 1))
        box = (left, top, left + self.resolution, top + self.resolution)
        flip = self.random_flip and rng.random() < 0.5

        sample = {"pixel_values": _pixel_values(photo.crop(box), flip)}
        if self.structure_cache is not None:
            sample["structure"] = _pixel_values(self.structure_cache(photo).crop(box), flip)
        mask = self.mask_sampler.sample(self.resolution, self.resolution, rng)
        sample["mask"] = torch.from_numpy(np.ascontiguousarray(mask))[None]
        return sample


def _pixel_values(image: Image.Image, flip: bool) -> torch.Tensor:
    """uint8 HWC PIL image -> float32 (3, H, W) in [-1, 1]."""
    array = np.asarray(image, dtype=np.float32)
    if flip:
        array = array[:, ::-1]
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))) / 127.5 - 1.0


@dataclass
class StreamPosition:
    """Where a process is in its stream: the epoch and how many examples of that epoch it has consumed."""

    epoch: int = 0
    index: int = 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])


class TrainingBatches:
    """Endless batches from a streamed dataset, restartable from a `StreamPosition`.

    Epochs repeat forever (`set_epoch` reshuffles); on resume the examples already consumed in the current
    epoch are skipped, and every sample's randomness is seeded by its position, so the batches are identical
    to those of an uninterrupted run.
    """

    def __init__(
        self,
        dataset,
        transform: SampleTransform,
        batch_size: int,
        image_column: str = "image",
        seed: int = 0,
        rank: int = 0,
        position: StreamPosition | None = None,
    ):
        self.dataset = dataset
        self.transform = transform
        self.batch_size = batch_size
        self.image_column = image_column
        self.seed = seed
        self.rank = rank
        self.position = position or StreamPosition()

    def samples(self) -> Iterator[dict[str, torch.Tensor]]:
        while True:
            epoch, skip = self.position.epoch, self.position.index
            if hasattr(self.dataset, "set_epoch"):
                self.dataset.set_epoch(epoch)
            produced = False
            for index, example in enumerate(self.dataset):
                if index < skip:
                    continue
                if self.image_column not in example:
                    raise KeyError(
                        f"--image_column {self.image_column!r} is not a column of the dataset "
                        f"(columns: {', '.join(example)})"
                    )
                rng = np.random.default_rng([self.seed, self.rank, epoch, index])
                sample = self.transform(_as_pil(example[self.image_column]), rng)
                self.position.index = index + 1
                produced = True
                yield sample
            if not produced and skip == 0:
                raise ValueError("the training dataset is empty")
            self.position.epoch, self.position.index = epoch + 1, 0

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        samples = self.samples()
        while True:
            items = [next(samples) for _ in range(self.batch_size)]
            yield {key: torch.stack([item[key] for item in items]) for key in items[0]}


def _as_pil(value) -> Image.Image:
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict) and value.get("bytes") is not None:
        import io

        return Image.open(io.BytesIO(value["bytes"]))
    if isinstance(value, dict) and value.get("path"):
        return Image.open(value["path"])
    if isinstance(value, np.ndarray):
        return Image.fromarray(value)
    raise TypeError(f"cannot read an image from a {type(value).__name__}")
