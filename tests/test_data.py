"""Training data stream: deterministic per-sample randomness, restart positions, loaders, structure cache."""

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

from med_hf.training.data import (
    SampleTransform,
    StreamPosition,
    StructureCache,
    TrainingBatches,
    load_streaming_dataset,
    shard_for_process,
)
from med_hf.training.masks import MaskSampler
from med_hf.training.rtv import structure_image


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (70 + i, 90, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def transform(structure: bool = False) -> SampleTransform:
    return SampleTransform(
        resolution=64,
        mask_sampler=MaskSampler({"free_form": 1.0}),
        structure_cache=StructureCache() if structure else None,
    )


def test_batches_have_the_documented_shapes_and_ranges(photo_dir):
    dataset = load_streaming_dataset(None, str(photo_dir))
    batch = next(iter(TrainingBatches(dataset, transform(structure=True), batch_size=3)))
    assert batch["pixel_values"].shape == batch["structure"].shape == (3, 3, 64, 64)
    assert batch["mask"].shape == (3, 1, 64, 64)
    assert batch["pixel_values"].min() >= -1 and batch["pixel_values"].max() <= 1
    assert set(batch["mask"].unique().tolist()) == {0.0, 1.0}


def test_restarting_from_a_position_gives_the_same_batches(photo_dir):
    dataset = shard_for_process(load_streaming_dataset(None, str(photo_dir)), 0, 1, seed=1, shuffle_buffer_size=4)
    straight = iter(TrainingBatches(dataset, transform(), batch_size=2, seed=5))
    first = [next(straight) for _ in range(5)]  # crosses an epoch boundary (6 photos)

    position = StreamPosition()
    partial = iter(TrainingBatches(dataset, transform(), batch_size=2, seed=5, position=position))
    for _ in range(2):
        next(partial)
    saved = position.state_dict()
    assert saved == {"epoch": 0, "index": 4}

    restored = StreamPosition()
    restored.load_state_dict(saved)
    resumed = iter(TrainingBatches(dataset, transform(), batch_size=2, seed=5, position=restored))
    for expected in first[2:]:
        batch = next(resumed)
        for key in expected:
            assert torch.equal(batch[key], expected[key]), key
    # Another epoch reshuffles, and another seed draws other masks.
    other = next(iter(TrainingBatches(dataset, transform(), batch_size=2, seed=6)))
    assert not torch.equal(other["mask"], first[0]["mask"])


def test_two_processes_read_disjoint_examples(photo_dir):
    seen = []
    for rank in (0, 1):
        shard = shard_for_process(load_streaming_dataset(None, str(photo_dir)), rank, 2, seed=0, shuffle_buffer_size=1)
        seen.append({np.asarray(example["image"]).shape for example in shard})
    assert seen[0] and seen[1] and not seen[0] & seen[1]


def test_parquet_datasets_stream_too(photo_dir, tmp_path):
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = []
    for path in sorted(photo_dir.glob("*.png"))[:3]:
        buffer = io.BytesIO(path.read_bytes())
        rows.append({"bytes": buffer.getvalue(), "path": path.name})
    pq.write_table(pa.table({"photo": rows}), tmp_path / "train.parquet")
    dataset = load_streaming_dataset("parquet", str(tmp_path))  # --dataset_name parquet --train_data_dir DIR
    batch = next(iter(TrainingBatches(dataset, transform(), batch_size=3, image_column="photo")))
    assert batch["pixel_values"].shape == (3, 3, 64, 64)
    with pytest.raises(KeyError, match="--image_column 'image' is not a column"):
        next(iter(TrainingBatches(dataset, transform(), batch_size=1)))


def test_structure_cache_computes_each_photo_once_and_persists(tmp_path, monkeypatch):
    calls = []
    import med_hf.training.data as data

    def fake_rtv(image, border):
        calls.append(image.size)
        return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)

    monkeypatch.setattr(data, "structure_image", fake_rtv)
    photo = Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3))
    cache = StructureCache(tmp_path / "cache")
    first = cache(photo)
    assert np.array_equal(np.asarray(cache(photo)), np.asarray(first)) and len(calls) == 1
    again = StructureCache(tmp_path / "cache")(photo)  # a new run reads the disk cache
    assert np.array_equal(np.asarray(again), np.asarray(first)) and len(calls) == 1
    assert not list((tmp_path / "cache").glob("*.tmp*"))


def test_structure_cache_keys_include_the_rtv_border(tmp_path, monkeypatch):
    """Targets made with another border (or before the border was part of the key) are never reused."""
    import med_hf.training.data as data

    borders = []

    def fake_rtv(image, border):
        borders.append(border)
        return Image.new("RGB", image.size, (0, 0, 0) if border == "zero" else (255, 255, 255))

    monkeypatch.setattr(data, "structure_image", fake_rtv)
    photo = Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3))
    # A file left by the old cache (key = pixels + size only, made with the replicated border).
    old_key = hashlib.sha1(photo.tobytes() + repr(photo.size).encode()).hexdigest()
    (tmp_path / "cache").mkdir()
    Image.new("RGB", photo.size, (9, 9, 9)).save(tmp_path / "cache" / f"{old_key}.png")

    default = StructureCache(tmp_path / "cache")
    replicate = StructureCache(tmp_path / "cache", border="replicate")
    assert default.border == "zero" and len({old_key, default.key(photo), replicate.key(photo)}) == 3
    assert np.asarray(default(photo)).max() == 0 and np.asarray(replicate(photo)).min() == 255
    assert borders == ["zero", "replicate"]
    # Both are on disk under their own keys; a new run with either border reads its own file.
    assert np.asarray(StructureCache(tmp_path / "cache")(photo)).max() == 0
    assert np.asarray(StructureCache(tmp_path / "cache", border="replicate")(photo)).min() == 255
    assert borders == ["zero", "replicate"]
    with pytest.raises(ValueError, match="border must be one of"):
        StructureCache(border="reflect")


def test_structure_cache_uses_the_authors_border_by_default():
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 20, 3), dtype=np.uint8))
    np.testing.assert_array_equal(np.asarray(StructureCache()(photo)), np.asarray(structure_image(photo)))
    replicated = structure_image(photo, border="replicate")
    assert not np.array_equal(np.asarray(StructureCache()(photo)), np.asarray(replicated))


def test_missing_training_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        load_streaming_dataset(None, str(tmp_path / "nope"))
