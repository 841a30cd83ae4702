"""`med-inpaint-dataset`: whole 🤗 datasets, one process or two, resume after SIGKILL or Ctrl-C, bad rows, Hub upload.

Every dataset is made here (64x64 photos, a tiny random model); most runs call `main` in-process, the two that
need real processes (`accelerate launch` with two CPU processes, a SIGKILL) run it in a subprocess.
"""

from __future__ import annotations

import functools
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from med_hf import MEDConfig, MEDModel
from med_hf import inpaint_dataset as tool
from med_hf.pipeline_med import MEDInpaintPipeline

SIZE = 64
PHOTOS = 7
BAD_ROWS = {2: "unreadable image", 5: "mask is 48x48 but the image is 64x64", 7: "missing mask", 8: "missing mask"}


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """`main` sets the job's thread count for its process; give the rest of the test session its own back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-model")
    MEDModel(MEDConfig.from_preset("tiny")).eval().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("datasets-cache")


def photo(index: int) -> Image.Image:
    """A small 'photo': colour gradients, a disc and stripes that differ per index."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    pixels = np.stack([xx * 4, yy * 4, np.full_like(xx, 30 * index)], -1).astype(float)
    pixels[(yy - 20 - 3 * index) ** 2 + (xx - 40) ** 2 < 120] = (200, 40 + 20 * index, 90)
    pixels += 25 * np.sin(xx / (2 + index % 3))[..., None]
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def mask(index: int, size: int = SIZE) -> Image.Image:
    """White = fill: a box that moves with the index."""
    image = Image.new("L", (size, size), 0)
    ImageDraw.Draw(image).rectangle((8 + 3 * index, 12, 30 + 3 * index, 40), fill=255)
    return image


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """An `imagefolder`: 7 photos, their masks (`mask_file_name` -> an image column `mask`), a caption column."""
    folder = tmp_path_factory.mktemp("photos")
    (folder / "masks").mkdir()
    lines = ["file_name,mask_file_name,caption"]
    for i in range(PHOTOS):
        photo(i).save(folder / f"photo_{i}.png")
        mask(i).save(folder / "masks" / f"photo_{i}.png")
        lines.append(f"photo_{i}.png,masks/photo_{i}.png,photo number {i}")
    (folder / "metadata.csv").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> tuple[Path, Path]:
    """10 rows in 3 Parquet files (image bytes, a column of mask file paths, an id); rows 2, 5, 7 and 8 are bad.

    Returns (dataset folder, mask folder): the masks live outside the dataset folder, where `--path-root` finds them.
    """
    from datasets import Dataset, Features, Value
    from datasets import Image as ImageFeature

    root = tmp_path_factory.mktemp("rows")
    dataset_dir, mask_dir = root / "dataset", root / "masks"
    (dataset_dir / "data").mkdir(parents=True)
    mask_dir.mkdir()
    images, mask_paths = [], []
    for i in range(10):
        images.append({"bytes": b"not an image" if i == 2 else png_bytes(photo(i)), "path": None})
        mask(i, size=48 if i == 5 else SIZE).save(mask_dir / f"{i}.png")
        mask_paths.append(None if i == 7 else "gone.png" if i == 8 else f"{i}.png")
    features = Features({"image": ImageFeature(), "mask_path": Value("string"), "id": Value("int64")})
    table = Dataset.from_dict({"image": images, "mask_path": mask_paths, "id": list(range(10))}, features=features)
    for index, (start, stop) in enumerate([(0, 4), (4, 7), (7, 10)]):
        table.select(range(start, stop)).to_parquet(str(dataset_dir / "data" / f"train-{index:05d}-of-00003.parquet"))
    return dataset_dir, mask_dir


def job(dataset: Path, output: Path, model_dir: Path, cache_dir: Path, *extra: str) -> list[str]:
    return [
        "--dataset", str(dataset), "--output-dir", str(output), "--model", str(model_dir),
        "--rows-per-shard", "2", "--batch-size", "2", "--cache-dir", str(cache_dir), "--quiet", *extra,
    ]  # fmt: skip


def rows_job(rows: tuple[Path, Path], output: Path, model_dir: Path, cache_dir: Path, *extra: str) -> list[str]:
    dataset_dir, mask_dir = rows
    return job(
        dataset_dir, output, model_dir, cache_dir, "--mask-column", "mask_path", "--path-root", str(mask_dir), *extra
    )


def files(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (relative name -> content)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def dataset_files(folder: Path) -> dict[str, bytes]:
    """What makes up the dataset: the shard files, the card and the errors (not job.json, which names the output)."""
    return {name: data for name, data in files(folder).items() if name != tool.JOB_FILE}


def load(folder: Path, cache_dir: Path):
    from datasets import load_dataset

    return load_dataset(str(folder), split="train", cache_dir=str(cache_dir / "outputs"))


@pytest.fixture(scope="module")
def reference(photos, model_dir, cache_dir, tmp_path_factory) -> Path:
    """One uninterrupted single-process run over the image folder: what every other way must reproduce."""
    output = tmp_path_factory.mktemp("reference") / "out"
    assert tool.main(job(photos, output, model_dir, cache_dir)) == 0
    return output


@pytest.fixture(scope="module")
def rows_reference(rows, model_dir, cache_dir, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("rows-reference") / "out"
    assert tool.main(rows_job(rows, output, model_dir, cache_dir)) == 0
    return output


# The texture stage picks discrete patches, so a last-bit difference of the network's output (another thread count,
# another batch composition: README, "Using the model") can pick another patch. Runs that batch rows differently
# from the reference are compared with the smooth fill, which the uint8 result makes bit-stable.
SMOOTH = ("--texture", "none")


@pytest.fixture(scope="module")
def smooth_reference(photos, model_dir, cache_dir, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("smooth-reference") / "out"
    assert tool.main(job(photos, output, model_dir, cache_dir, *SMOOTH)) == 0
    return output


@pytest.fixture(scope="module")
def smooth_rows_reference(rows, model_dir, cache_dir, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("smooth-rows-reference") / "out"
    assert tool.main(rows_job(rows, output, model_dir, cache_dir, *SMOOTH)) == 0
    return output


def test_output_loads_with_load_dataset_and_keeps_every_column_and_known_pixel(reference, photos, cache_dir):
    names = sorted(p.name for p in (reference / "data").iterdir())
    assert names == [f"train-00000-{start:09d}-{min(start + 2, PHOTOS):09d}.parquet" for start in range(0, PHOTOS, 2)]
    assert {p.name for p in reference.iterdir()} == {"data", "README.md", "errors.jsonl", "job.json"}
    assert (reference / "errors.jsonl").read_text() == ""

    result = load(reference, cache_dir)
    assert result.column_names == ["image", "mask", "caption", "inpainted"]
    assert result["caption"] == [f"photo number {i}" for i in range(PHOTOS)]  # input order
    for i, row in enumerate(result):
        original = np.asarray(Image.open(photos / f"photo_{i}.png"))
        hole = np.asarray(mask(i)) > 127
        filled = np.asarray(row["inpainted"])
        assert row["inpainted"].format == "PNG" and filled.shape == original.shape
        assert np.array_equal(np.asarray(row["image"]), original)  # the input image is kept as it was
        assert np.array_equal(filled[~hole], original[~hole])  # pixels outside the mask are untouched
        assert not np.array_equal(filled[hole], original[hole])
    card = (reference / "README.md").read_text()
    assert "num_examples: 7" in card and "path: data/train-*" in card


@pytest.mark.slow
def test_two_processes_with_accelerate_launch_write_the_same_dataset(
    smooth_reference, photos, model_dir, cache_dir, tmp_path
):
    output = tmp_path / "out"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    launcher = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port),
    ]  # fmt: skip
    # A fresh HF_HOME: no accelerate config of this machine's user gets in the way.
    environment = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), OMP_NUM_THREADS="1")
    command = [*launcher, "-m", "med_hf.inpaint_dataset", *job(photos, output, model_dir, cache_dir, *SMOOTH)]
    command.remove("--quiet")  # keep the per-process log lines
    result = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[process 0/2]" in result.stderr and "[process 1/2]" in result.stderr
    assert "7 rows inpainted, 0 failed" in result.stdout and "on 2 processes" in result.stdout
    assert dataset_files(output) == dataset_files(smooth_reference)  # same files, same bytes: rows and pixels


def shard_files(output: Path) -> list[str]:
    return sorted(p.name for p in (output / "data").glob("*.parquet")) if (output / "data").is_dir() else []


def slowed_run(arguments: list[str]) -> subprocess.Popen:
    """`main` in a subprocess whose pipeline takes 0.4 s more per call, so that there is a middle to kill it in."""
    script = (
        "import functools, sys, time\n"
        "from med_hf import inpaint_dataset\n"
        "from med_hf.pipeline_med import MEDInpaintPipeline\n"
        "call = MEDInpaintPipeline.__call__\n"
        "@functools.wraps(call)\n"
        "def slow(self, *args, **kwargs):\n"
        "    time.sleep(0.4)\n"
        "    return call(self, *args, **kwargs)\n"
        "MEDInpaintPipeline.__call__ = slow\n"
        "sys.exit(inpaint_dataset.main(sys.argv[1:]))\n"
    )
    environment = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.Popen([sys.executable, "-c", script, *arguments], env=environment, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_resume_after_sigkill_gives_the_same_dataset(reference, photos, model_dir, cache_dir, tmp_path, capsys):
    output = tmp_path / "out"
    arguments = job(photos, output, model_dir, cache_dir, "--batch-size", "2")
    process = slowed_run(arguments)
    deadline = time.monotonic() + 240
    while not shard_files(output):
        assert process.poll() is None, process.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stderr.close()
    killed_with = shard_files(output)
    assert 1 <= len(killed_with) < 4 and not (output / "README.md").exists(), "killed too late to test anything"
    # What SIGKILL leaves when it strikes during a write: a hidden partial file, which the rerun must discard.
    (output / "data" / ".train-00000-000000004-000000006.parquet.0badf00d.partial").write_bytes(b"half a shard")

    assert tool.main(arguments) == 0
    assert f"{2 * len(killed_with)} done by an earlier run" in capsys.readouterr().out
    assert dataset_files(output) == dataset_files(reference)


def press_ctrl_c() -> None:
    raise KeyboardInterrupt


def send_sigterm() -> None:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)  # the handler raises before this ends


@pytest.mark.parametrize(
    ("stop", "status", "word"), [(press_ctrl_c, 130, "interrupted"), (send_sigterm, 143, "terminated")]
)
def test_ctrl_c_or_sigterm_exits_keeping_only_finished_shards_and_a_rerun_completes(
    stop, status, word, reference, photos, model_dir, cache_dir, tmp_path, monkeypatch, capsys
):
    output = tmp_path / "out"
    call, calls = MEDInpaintPipeline.__call__, []

    @functools.wraps(call)
    def stopped_on_third_call(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            stop()
        return call(self, *args, **kwargs)

    monkeypatch.setattr(MEDInpaintPipeline, "__call__", stopped_on_third_call)
    assert tool.main(job(photos, output, model_dir, cache_dir)) == status
    error = capsys.readouterr().err
    assert error == f"med-inpaint-dataset: {word}; finished shards are kept, rerun the same command to resume\n"
    assert sorted(p.name for p in (output / "data").iterdir()) == [  # nothing half-written, no hidden leftovers
        "train-00000-000000000-000000002.parquet",
        "train-00000-000000002-000000004.parquet",
    ]
    monkeypatch.setattr(MEDInpaintPipeline, "__call__", call)
    assert tool.main(job(photos, output, model_dir, cache_dir)) == 0
    assert "3 rows inpainted, 0 failed, 4 done by an earlier run" in capsys.readouterr().out
    assert dataset_files(output) == dataset_files(reference)


def test_bad_rows_are_recorded_with_their_index_and_the_job_goes_on(rows_reference, cache_dir, capsys):
    errors = [json.loads(line) for line in (rows_reference / "errors.jsonl").read_text().splitlines()]
    assert [e["index"] for e in errors] == sorted(BAD_ROWS)
    for entry in errors:
        assert BAD_ROWS[entry["index"]] in entry["reason"], entry
    assert "no file gone.png" in errors[3]["reason"]

    result = load(rows_reference, cache_dir)
    assert result["id"] == list(range(10))  # bad rows stay, in place, with a null result
    assert [i for i, image in enumerate(result["inpainted"]) if image is None] == sorted(BAD_ROWS)
    assert result.with_format("arrow")["image"][2].as_py()["bytes"] == b"not an image"  # kept as it was
    card = (rows_reference / "README.md").read_text()
    assert "failed rows: 4" in card


def test_bad_rows_summary_line(rows, model_dir, cache_dir, tmp_path, capsys):
    assert tool.main(rows_job(rows, tmp_path / "out", model_dir, cache_dir)) == 0
    captured = capsys.readouterr()
    assert "6 rows inpainted, 4 failed (see" in captured.out and "images/s on 1 process" in captured.out
    assert "Traceback" not in captured.err


def test_streaming_input_gives_the_same_rows_and_pixels(rows, smooth_rows_reference, model_dir, cache_dir, tmp_path):
    rows_reference = smooth_rows_reference
    output = tmp_path / "out"
    assert tool.main(rows_job(rows, output, model_dir, cache_dir, "--streaming", *SMOOTH)) == 0
    # A stream is cut per source shard (its 3 Parquet files of 4, 3 and 3 rows) ...
    assert sorted(p.name for p in (output / "data").iterdir()) == [
        "train-00000-000000000-000000002.parquet",
        "train-00000-000000002-000000004.parquet",
        "train-00001-000000000-000000002.parquet",
        "train-00001-000000002-000000003.parquet",
        "train-00002-000000000-000000002.parquet",
        "train-00002-000000002-000000003.parquet",
    ]
    # ... and still gives the rows, results and errors of the map-style run, with global indices. (The results
    # are equal pixel for pixel because each row meets the same batch neighbours in both layouts here: the
    # network's float32 output can move a rare pixel by one level with the batch it is computed in.)
    streamed, mapped = load(output, cache_dir), load(rows_reference, cache_dir)
    assert streamed["id"] == mapped["id"] == list(range(10))
    for a, b in zip(streamed["inpainted"], mapped["inpainted"], strict=True):
        assert (a is None and b is None) or np.array_equal(np.asarray(a), np.asarray(b))
    errors = [json.loads(line) for line in (output / "errors.jsonl").read_text().splitlines()]
    reference_errors = [json.loads(line) for line in (rows_reference / "errors.jsonl").read_text().splitlines()]
    assert [(e["index"], e["reason"]) for e in errors] == [(e["index"], e["reason"]) for e in reference_errors]
    assert (errors[0]["source"], errors[0]["row"]) == (0, 2) and (errors[2]["source"], errors[2]["row"]) == (2, 0)


def test_save_to_disk_input_gives_the_reference_results(photos, reference, model_dir, cache_dir, tmp_path):
    from datasets import load_dataset

    saved = tmp_path / "saved"
    load_dataset(str(photos), split="train", cache_dir=str(cache_dir)).save_to_disk(str(saved))
    output = tmp_path / "out"
    assert tool.main(job(saved, output, model_dir, cache_dir)) == 0
    ours = load(output, cache_dir).with_format("arrow")["inpainted"].to_pylist()
    theirs = load(reference, cache_dir).with_format("arrow")["inpainted"].to_pylist()
    assert ours == theirs


def stream_shards(dataset, rows_per_shard: int, finished: dict, world: int) -> list[tuple]:
    """Every (shard, ids, last) the processes of a `world`-process run would write, with the writing rank."""
    dealt = []
    for rank in range(world):
        for shard, table, last in tool.my_stream_shards(
            dataset, dataset.num_shards, rows_per_shard, finished, rank, world
        ):
            dealt.append((shard, tuple(table.column("id").to_pylist()), last, rank))
    return dealt


@pytest.mark.parametrize("source_files", [3, 1])
def test_stream_shards_are_dealt_to_processes_without_gap_or_overlap(rows, source_files, tmp_path):
    """Whatever the number of processes: the same shards with the same rows, each written once."""
    from datasets import load_dataset

    dataset_dir = rows[0]
    data_files = sorted(str(p) for p in (dataset_dir / "data").glob("*.parquet"))[:source_files]
    dataset = load_dataset("parquet", data_files=data_files, split="train", streaming=True)
    one = stream_shards(dataset, 2, {}, world=1)
    assert [ids for _, ids, _, _ in one] == [(0, 1), (2, 3), (4, 5), (6,), (7, 8), (9,)][
        : 2 if source_files == 1 else 6
    ]
    assert [last for _, _, last, _ in one] == ([False, True] if source_files == 1 else [False, True] * 3)
    for world in (2, 3, 4):
        dealt = stream_shards(dataset, 2, {}, world)
        assert sorted(d[:3] for d in dealt) == [d[:3] for d in one]
        assert len({d[3] for d in dealt}) == min(world, len(one))  # every process gets work where there is any
    # A resume deals only what is missing.
    done = {(s.source, s.start): tool.FinishedShard(s, last) for s, _, last, _ in one[:1]}
    assert sorted(d[:3] for d in stream_shards(dataset, 2, done, world=2)) == [d[:3] for d in one[1:]]


def test_map_style_shards_are_dealt_round_robin_over_what_is_missing():
    shards = tool.map_style_shards(7, 2)
    assert [(s.start, s.stop) for s in shards] == [(0, 2), (2, 4), (4, 6), (6, 7)]
    assert tool.my_map_style_shards(7, 2, {}, 0, 2) == [shards[0], shards[2]]
    done = {(0, 0): tool.FinishedShard(shards[0], False)}
    assert tool.my_map_style_shards(7, 2, done, 0, 2) == [shards[1], shards[3]]
    assert tool.my_map_style_shards(7, 2, done, 1, 2) == [shards[2]]


def test_rerun_with_other_settings_is_refused_and_a_finished_run_is_left_as_it_is(
    reference, photos, model_dir, cache_dir, tmp_path, capsys
):
    output = tmp_path / "out"
    shutil.copytree(reference, output)
    before = files(output)
    assert tool.main(job(photos, output, model_dir, cache_dir, "--seed", "1")) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "seed: 0 -> 1" in error and "Traceback" not in error
    assert tool.main(job(photos, output, model_dir, cache_dir)) == 0
    assert "0 rows inpainted, 0 failed, 7 done by an earlier run" in capsys.readouterr().out
    assert files(output) == before


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("--mask-column", "nope"), "--mask-column 'nope' is not a column"),
        (("--split", "test"), "cannot load --dataset"),
        (("--output-column", "caption"), "already has a column 'caption'"),
        (("--rows-per-shard", "0"), "--rows-per-shard must be at least 1"),
        (("--dataset", "{tmp}/no-such-folder"), "no such local folder"),
        (("--output-dir", "{photos}/out"), "is inside the input dataset"),
        (("--output-dir", "{photos}/.."), "contains the input dataset"),
        (("--output-dir", "{tmp}/stranger"), "is not empty and holds no earlier run"),
        (("--model", "{tmp}/no-model"), "cannot load the model"),
    ],
)
def test_user_errors_are_one_line_with_status_1_and_the_input_is_untouched(
    change, message, photos, model_dir, cache_dir, tmp_path, capsys
):
    (tmp_path / "stranger").mkdir()
    (tmp_path / "stranger" / "notes.txt").write_text("mine")
    arguments = job(photos, tmp_path / "out", model_dir, cache_dir)
    option, value = change
    value = value.format(tmp=tmp_path, photos=photos)
    if option in arguments:
        arguments[arguments.index(option) + 1] = value
    else:
        arguments += [option, value]
    before = files(photos)
    assert tool.main(arguments) == 1
    error = capsys.readouterr().err
    assert error.startswith("med-inpaint-dataset: error: ") and error.count("\n") == 1, error
    assert message in error and "Traceback" not in error
    assert files(photos) == before
    assert (tmp_path / "stranger" / "notes.txt").read_text() == "mine"


def test_texture_is_passed_only_when_given_and_only_to_a_pipeline_that_has_it():
    def without_texture(image, mask_image, hd_strategy="auto", batch_size=8): ...

    def with_texture(image, mask_image, hd_strategy="auto", texture="none"): ...

    class Pipe:
        def __init__(self, call):
            self.__call__ = call

    args = tool.parse_args(["--dataset", "d", "--output-dir", "o"])
    assert "texture" not in tool.pipeline_options(args, Pipe(with_texture))
    assert tool.pipeline_options(args, Pipe(without_texture))["batch_size"] == 8
    args.texture = "exemplar"
    assert tool.pipeline_options(args, Pipe(with_texture))["texture"] == "exemplar"
    with pytest.raises(tool.UserError, match="no texture option"):
        tool.pipeline_options(args, Pipe(without_texture))
    args.texture = "none"  # what a pipeline without the option does anyway
    assert "texture" not in tool.pipeline_options(args, Pipe(without_texture))


def test_row_seeds_depend_on_the_row_alone():
    assert tool.row_seed(0, 0, 5) == tool.row_seed(0, 0, 5)
    assert len({tool.row_seed(seed, source, row) for seed in (0, 1) for source in (0, 1) for row in range(50)}) == 200


class FakeHfApi:
    """Stands in for `huggingface_hub.HfApi`: records the calls, and lists what `upload_folder` would send."""

    calls: list = []

    def __init__(self, *args, **kwargs):
        pass

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, *, folder_path, allow_patterns=None, ignore_patterns=None, **kwargs):
        from huggingface_hub.utils import filter_repo_objects

        names = [p.relative_to(folder_path).as_posix() for p in Path(folder_path).rglob("*") if p.is_file()]
        uploaded = sorted(filter_repo_objects(names, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns))
        self.calls.append(("upload_folder", uploaded, kwargs))
        return type("Commit", (), {"commit_url": "https://huggingface.co/datasets/me/clean/commit/1"})()


def test_push_to_hub_uploads_the_finished_dataset(
    reference, photos, model_dir, cache_dir, tmp_path, monkeypatch, capsys
):
    import huggingface_hub

    output = tmp_path / "out"
    shutil.copytree(reference, output)
    FakeHfApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    assert tool.main(job(photos, output, model_dir, cache_dir, "--push-to-hub", "me/clean", "--hub-private")) == 0
    assert "pushed to https://huggingface.co/datasets/me/clean/commit/1" in capsys.readouterr().out
    (create, repo, create_options), (upload, uploaded, upload_options) = FakeHfApi.calls
    assert (create, repo, create_options) == (
        "create_repo",
        "me/clean",
        {"repo_type": "dataset", "private": True, "exist_ok": True},
    )
    assert upload == "upload_folder" and upload_options["repo_id"] == "me/clean"
    assert upload_options["repo_type"] == "dataset"
    data = sorted(f"data/{p.name}" for p in (reference / "data").iterdir())
    assert uploaded == sorted(["README.md", "errors.jsonl", *data])  # not job.json, which names local paths


def test_push_to_hub_failure_is_one_line_and_the_dataset_stays(
    reference, photos, model_dir, cache_dir, tmp_path, monkeypatch, capsys
):
    import huggingface_hub

    class Offline(FakeHfApi):
        def create_repo(self, repo_id, **kwargs):
            raise ConnectionError("cannot reach huggingface.co")

    output = tmp_path / "out"
    shutil.copytree(reference, output)
    monkeypatch.setattr(huggingface_hub, "HfApi", Offline)
    assert tool.main(job(photos, output, model_dir, cache_dir, "--push-to-hub", "me/clean")) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "could not be pushed to me/clean: cannot reach huggingface.co" in error
    assert files(output / "data") == files(reference / "data")  # (the card now names the repo)
