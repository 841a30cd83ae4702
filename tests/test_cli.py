"""The `med-inpaint` command: file and folder mode, options, one-line errors with exit codes, atomic writes.

Most tests call `med_hf.cli.main` in-process; one runs the installed console script in a subprocess.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image, ImageDraw
from scipy import ndimage

from med_hf import MEDConfig, MEDModel
from med_hf.cli import main
from med_hf.image_files import write_result

SIZE = (240, 180)
BLOB = (90, 60, 140, 110)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """The tiny preset, working at 256 px, saved as a bare MEDModel folder."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny") / "model"
    MEDModel(MEDConfig.from_preset("tiny", image_size=256)).save_pretrained(path)
    return path


def photo(size: tuple[int, int] = SIZE, offset: int = 0) -> Image.Image:
    """A real photo: part of scikit-image's astronaut, scaled to `size`."""
    astronaut = Image.fromarray(skimage.data.astronaut())
    return astronaut.crop((offset, offset, offset + 400, offset + 300)).resize(size, Image.Resampling.BICUBIC)


def blob_mask(size: tuple[int, int] = SIZE, ellipse: tuple[int, int, int, int] = BLOB) -> Image.Image:
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).ellipse(ellipse, fill=255)
    return mask


def holes(mask: Image.Image) -> np.ndarray:
    return np.asarray(mask.convert("L")) > 127


def png_with_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims `width` x `height` pixels but that holds almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")
    )


def truncated_png(path: Path) -> None:
    photo().save(path)
    path.write_bytes(path.read_bytes()[:4000])


def run(capsys, *args: str | os.PathLike) -> tuple[int, str, str]:
    code = main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_inpainted(before: np.ndarray, after: np.ndarray, hole: np.ndarray) -> None:
    assert after.shape == before.shape
    np.testing.assert_array_equal(after[~hole], before[~hole])
    assert np.any(np.atleast_3d(after != before), axis=-1)[hole].mean() > 0.5


@pytest.fixture
def pair(tmp_path) -> tuple[Path, Path]:
    image, mask = tmp_path / "photo.png", tmp_path / "mask.png"
    photo().save(image)
    blob_mask().save(mask)
    return image, mask


# --- file mode -------------------------------------------------------------------------------------------


def test_one_file(capsys, model_dir, pair, tmp_path):
    image, mask = pair
    output = tmp_path / "out" / "result.png"
    code, out, err = run(capsys, "--image", image, "--mask", mask, "--output", output, "--model", model_dir)
    assert code == 0
    assert out.startswith(f"wrote {output} in ")
    assert err == ""  # no loading bars either
    with Image.open(output) as result:
        assert (result.size, result.mode) == (SIZE, "RGB")
        assert_inpainted(np.asarray(photo()), np.asarray(result), holes(blob_mask()))
    assert sorted(p.name for p in output.parent.iterdir()) == ["result.png"]


def test_strategy_and_dilation_options_reach_the_pipeline(capsys, model_dir, pair, tmp_path):
    from med_hf.pipeline_med import MEDInpaintPipeline

    image, mask = pair
    output = tmp_path / "result.png"
    args = ("--image", image, "--mask", mask, "--output", output, "--model", model_dir)
    code, _, err = run(capsys, *args, "--hd-strategy", "original", "--mask-dilation", "5")
    assert code == 0, err

    pipe = MEDInpaintPipeline.from_pretrained(model_dir)
    expected = pipe(image=photo(), mask_image=blob_mask(), hd_strategy="original", mask_dilation=5).images[0]
    default = pipe(image=photo(), mask_image=blob_mask()).images[0]
    with Image.open(output) as result:
        written = np.asarray(result)
    np.testing.assert_array_equal(written, np.asarray(expected))
    assert not np.array_equal(written, np.asarray(default))
    grown = ndimage.distance_transform_edt(~holes(blob_mask())) <= 5
    assert_inpainted(np.asarray(photo()), written, grown)


def test_texture_options_and_seed_reach_the_pipeline(capsys, model_dir, pair, tmp_path):
    from med_hf.pipeline_med import MEDInpaintPipeline

    image, mask = pair
    args = ("--image", image, "--mask", mask, "--model", model_dir)
    pipe = MEDInpaintPipeline.from_pretrained(model_dir)
    calls = {
        "smooth": (("--texture", "none"), {"texture": "none"}),
        "default": ((), {"generator": torch.Generator().manual_seed(0)}),
        "seed 3, 5x5, guidance 4": (
            ("--seed", "3", "--texture-patch-size", "5", "--texture-guidance", "4"),
            {"generator": torch.Generator().manual_seed(3), "texture_patch_size": 5, "texture_guidance": 4.0},
        ),
    }
    written = {}
    for name, (options, call) in calls.items():
        output = tmp_path / f"{name}.png"
        code, _, err = run(capsys, *args, "--output", output, *options)
        assert code == 0, err
        with Image.open(output) as result:
            written[name] = np.asarray(result)
        expected = pipe(image=photo(), mask_image=blob_mask(), **call).images[0]
        np.testing.assert_array_equal(written[name], np.asarray(expected), err_msg=name)
        assert_inpainted(np.asarray(photo()), written[name], holes(blob_mask()))
    assert len({array.tobytes() for array in written.values()}) == len(written)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--texture", "blur", "invalid choice: 'blur'"),
        ("--texture-patch-size", "6", "must be odd"),
        ("--texture-patch-size", "1", "must be a number >= 3"),
        ("--texture-guidance", "-1", "must be a number >= 0"),
        ("--seed", "x", "not a number"),
    ],
)
def test_bad_texture_options_are_usage_errors(capsys, pair, tmp_path, option, value, message):
    image, mask = pair
    with pytest.raises(SystemExit) as exit_info:
        main(["--image", str(image), "--mask", str(mask), "--output", str(tmp_path / "r.png"), option, value])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r.png").exists()


def test_output_folder_and_jpeg_output(capsys, model_dir, tmp_path):
    image, mask = tmp_path / "shot.png", tmp_path / "mask.png"
    photo().convert("RGBA").save(image)
    blob_mask().save(mask)
    folder = tmp_path / "results"
    folder.mkdir()
    code, _, err = run(capsys, "--image", image, "--mask", mask, "--output", folder, "--model", model_dir)
    assert code == 0, err
    with Image.open(folder / "shot.png") as result:
        assert (result.size, result.mode) == (SIZE, "RGBA")

    code, _, err = run(
        capsys, "--image", image, "--mask", mask, "--output", tmp_path / "shot.jpg", "--model", model_dir
    )
    assert code == 0, err
    with Image.open(tmp_path / "shot.jpg") as result:
        assert (result.format, result.size, result.mode) == ("JPEG", SIZE, "RGB")


# --- folder mode -----------------------------------------------------------------------------------------


@pytest.fixture
def folders(tmp_path) -> tuple[Path, Path]:
    """Six photos: three good (one JPEG, one with a `_mask` suffixed mask), three bad."""
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for name, offset in (("a", 0), ("c", 60)):
        photo(offset=offset).save(images / f"{name}.png")
    photo(offset=30).save(images / "b.jpg", quality=95)
    photo().save(images / "d.png")  # no mask
    truncated_png(images / "e.png")
    photo().save(images / "f.png")
    (images / "notes.txt").write_text("not a photo, ignored")
    for name in ("a.png", "b.png", "c_mask.png", "e.png"):
        blob_mask().save(masks / name)
    blob_mask((200, 180), (10, 10, 60, 60)).save(masks / "f.png")  # wrong size
    return images, masks


def test_folder_mode_goes_on_past_bad_files_and_reports_them(capsys, model_dir, folders, tmp_path, monkeypatch):
    images, masks = folders
    output = tmp_path / "out"
    monkeypatch.setattr(type(sys.stderr), "isatty", lambda self: True, raising=False)  # bars on a terminal
    code, out, err = run(capsys, "--image", images, "--mask", masks, "--output", output, "--model", model_dir)
    assert code == 1
    assert sorted(p.name for p in output.iterdir()) == ["a.png", "b.png", "c.png"]
    for name in ("a.png", "b.jpg", "c.png"):
        with Image.open(images / name) as before, Image.open(output / f"{Path(name).stem}.png") as after:
            assert after.size == before.size
            assert_inpainted(np.asarray(before), np.asarray(after), holes(blob_mask()))

    errors = [line for line in err.splitlines() if line.startswith("med-inpaint: error:")]
    assert len(errors) == 3
    assert f"{images / 'd.png'}: no mask with a matching name in {masks}" in errors[0]
    assert str(images / "e.png") in errors[1] and "corrupt or truncated" in errors[1]
    assert str(images / "f.png") in errors[2] and "is 200x180 but the image is 240x180" in errors[2]
    assert "inpainting" in err and "6/6" in err  # the progress bar
    assert "Traceback" not in err
    assert out.startswith("3 inpainted, 3 failed, in ")
    assert out.rstrip().endswith(f"-> {output}")


def test_running_out_of_memory_on_one_photo_does_not_stop_the_folder(capsys, model_dir, folders, tmp_path, monkeypatch):
    import med_hf.cli

    images, masks = folders
    for name in ("d.png", "e.png", "f.png"):
        (images / name).unlink()
    real = med_hf.cli._inpaint_file

    def exhausted_on_a(pipe, job, args):
        if job.image.stem == "a":
            raise MemoryError
        return real(pipe, job, args)

    monkeypatch.setattr(med_hf.cli, "_inpaint_file", exhausted_on_a)
    output = tmp_path / "out"
    args = ("--image", images, "--mask", masks, "--output", output, "--model", model_dir, "--quiet")
    code, out, err = run(capsys, *args)
    assert code == 1
    assert sorted(p.name for p in output.iterdir()) == ["b.png", "c.png"]
    assert err.splitlines() == [  # --quiet: no progress bar
        f"med-inpaint: error: {images / 'a.png'}: out of memory (MemoryError); lower --max-pixels or use "
        "--hd-strategy crop"
    ]
    assert out.startswith("2 inpainted, 1 failed")


# --- bad input -------------------------------------------------------------------------------------------


def _missing_image(tmp_path: Path) -> list[str]:
    blob_mask().save(tmp_path / "mask.png")
    return ["--image", str(tmp_path / "nope.png"), "--mask", str(tmp_path / "mask.png")]


def _missing_mask(tmp_path: Path) -> list[str]:
    photo().save(tmp_path / "photo.png")
    return ["--image", str(tmp_path / "photo.png"), "--mask", str(tmp_path / "nope.png")]


def _not_an_image(tmp_path: Path) -> list[str]:
    (tmp_path / "photo.png").write_text("this is text, not a PNG")
    blob_mask().save(tmp_path / "mask.png")
    return ["--image", str(tmp_path / "photo.png"), "--mask", str(tmp_path / "mask.png")]


def _mask_size_differs(tmp_path: Path) -> list[str]:
    photo().save(tmp_path / "photo.png")
    blob_mask((241, 180)).save(tmp_path / "mask.png")
    return ["--image", str(tmp_path / "photo.png"), "--mask", str(tmp_path / "mask.png")]


def _truncated(tmp_path: Path) -> list[str]:
    truncated_png(tmp_path / "photo.png")
    blob_mask().save(tmp_path / "mask.png")
    return ["--image", str(tmp_path / "photo.png"), "--mask", str(tmp_path / "mask.png")]


def _over_max_pixels(tmp_path: Path) -> list[str]:
    photo().save(tmp_path / "photo.png")
    blob_mask().save(tmp_path / "mask.png")
    return ["--image", str(tmp_path / "photo.png"), "--mask", str(tmp_path / "mask.png"), "--max-pixels", "40000"]


def _header_over_default_limit(tmp_path: Path) -> list[str]:
    png_with_header_only(tmp_path / "photo.png", 9000, 8000)  # 72 MP > 64 MP, below PIL's bomb limit
    png_with_header_only(tmp_path / "mask.png", 9000, 8000)
    return ["--image", str(tmp_path / "photo.png"), "--mask", str(tmp_path / "mask.png")]


def _header_decompression_bomb(tmp_path: Path) -> list[str]:
    png_with_header_only(tmp_path / "photo.png", 30000, 30000)
    blob_mask().save(tmp_path / "mask.png")
    return ["--image", str(tmp_path / "photo.png"), "--mask", str(tmp_path / "mask.png")]


def _bomb_allowed_by_max_pixels(tmp_path: Path) -> list[str]:
    # Above PIL's own decompression-bomb limit, but the user allowed it: --max-pixels alone decides.
    return [*_header_decompression_bomb(tmp_path), "--max-pixels", "1000000000"]


BAD_INPUTS = [
    (_missing_image, "no such file or folder: {tmp}/nope.png"),
    (_missing_mask, "no such file or folder: {tmp}/nope.png"),
    (_not_an_image, "{tmp}/photo.png is not an image file PIL can read."),
    (_mask_size_differs, "{tmp}/photo.png: mask {tmp}/mask.png is 241x180 but the image is 240x180"),
    (_truncated, "Could not decode {tmp}/photo.png (corrupt or truncated?)"),
    (_over_max_pixels, "{tmp}/photo.png: image of 240x180 pixels (0.0 MP) exceeds the limit of 0.0 MP"),
    (_header_over_default_limit, "{tmp}/photo.png: image of 9000x8000 pixels (72.0 MP) exceeds the limit of 64.0"),
    (_header_decompression_bomb, "{tmp}/photo.png: image of 30000x30000 pixels (900.0 MP) exceeds the limit"),
    (_bomb_allowed_by_max_pixels, "Could not decode {tmp}/photo.png (corrupt or truncated?)"),
]


@pytest.mark.parametrize(("make_args", "expected"), BAD_INPUTS, ids=[f.__name__.strip("_") for f, _ in BAD_INPUTS])
def test_bad_input_gives_one_error_line_and_exit_code_1(capsys, model_dir, tmp_path, make_args, expected):
    output = tmp_path / "out" / "result.png"
    code, _, err = run(capsys, *make_args(tmp_path), "--output", output, "--model", model_dir)
    assert code == 1
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("med-inpaint: error: ")
    assert expected.format(tmp=tmp_path) in lines[0]
    assert "PIL" not in lines[0].replace("PIL can read", "")
    if "exceeds the limit" in expected:
        assert lines[0].endswith("or raise --max-pixels if this machine has the memory.")
    assert not output.exists()


def test_missing_model_folder_is_a_clear_error(capsys, pair, tmp_path):
    image, mask = pair
    code, _, err = run(
        capsys, "--image", image, "--mask", mask, "--output", tmp_path / "r.png", "--model", tmp_path / "no-model"
    )
    assert code == 1
    assert err.startswith(f"med-inpaint: error: cannot load the model {tmp_path / 'no-model'}: ")
    assert len(err.splitlines()) == 1


def test_bad_option_value_exits_with_usage_error(capsys, pair, tmp_path):
    image, mask = pair
    with pytest.raises(SystemExit) as exit_info:
        main(["--image", str(image), "--mask", str(mask), "--output", str(tmp_path / "r.png"), "--hd-strategy", "tile"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'tile'" in capsys.readouterr().err


# --- atomic output ---------------------------------------------------------------------------------------


def _save_that_fails_midway(self, fp, format=None, **params):
    fp.write(b"\x89PNG\r\n\x1a\n" + b"\0" * 1000)  # part of a file ...
    raise OSError("No space left on device")  # ... then the disk is full


@pytest.mark.parametrize("existing", [False, True], ids=["new", "overwrite"])
def test_output_is_written_completely_or_not_at_all(capsys, model_dir, pair, tmp_path, monkeypatch, existing):
    image, mask = pair
    folder = tmp_path / "out"
    folder.mkdir()
    output = folder / "result.png"
    if existing:
        output.write_bytes(b"previous result")
    monkeypatch.setattr(Image.Image, "save", _save_that_fails_midway)
    code, _, err = run(capsys, "--image", image, "--mask", mask, "--output", output, "--model", model_dir)
    assert code == 1
    assert err.splitlines() == [f"med-inpaint: error: {image}: No space left on device"]
    if existing:
        assert output.read_bytes() == b"previous result"
    else:
        assert not output.exists()
    assert [p.name for p in folder.iterdir()] == (["result.png"] if existing else [])  # no temporary file left


def test_interrupted_save_leaves_no_file(tmp_path, monkeypatch):
    def interrupted(self, fp, format=None, **params):
        fp.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_result(photo(), tmp_path / "result.png")
    assert list(tmp_path.iterdir()) == []


# --- the installed console script ------------------------------------------------------------------------


def test_installed_console_script(model_dir, tmp_path):
    script = shutil.which("med-inpaint")
    assert script, "the med-inpaint console script is not installed (pip install -e .)"
    images, masks, output = tmp_path / "images", tmp_path / "masks", tmp_path / "out"
    images.mkdir()
    masks.mkdir()
    photo().save(images / "good.png")
    truncated_png(images / "broken.png")
    for name in ("good.png", "broken.png"):
        blob_mask().save(masks / name)

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    completed = subprocess.run(
        [script, "--image", images, "--mask", masks, "--output", output, "--model", model_dir],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 1, completed.stderr
    assert [p.name for p in output.iterdir()] == ["good.png"]
    with Image.open(output / "good.png") as result:
        assert_inpainted(np.asarray(photo()), np.asarray(result), holes(blob_mask()))
    assert f"med-inpaint: error: Could not decode {images / 'broken.png'}" in completed.stderr
    assert "Traceback" not in completed.stderr
    assert completed.stdout.startswith("1 inpainted, 1 failed")
