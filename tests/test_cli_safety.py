"""`med-inpaint` against a hostile user: one test per promise of the command's reliability rewrite.

1. An output never replaces an input, however the path is spelled: one error line, exit 1, nothing written.
2. Two photos never write the same result, and an ambiguous mask is a failure of that photo.
3. Every format conversion is faithful or stated (a warning line, or a refusal with the reason).
4. NaN is never an output: corrupt weights, non-finite known pixels and non-finite results are refused.
5. Written files get the process's umask, like any normal tool's.
6. Errors are one line, not tracebacks; Ctrl-C exits 130 and leaves only complete results.

Photos are tiny (96x64) random images, so a pixel in the wrong place or a wrong value always shows.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import stat
import struct
import subprocess
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms, ImageOps
from safetensors.torch import load_file, save_file

import med_hf.cli
from med_hf import MEDConfig, MEDModel
from med_hf.atomic_files import PARTIAL_SUFFIX, atomic_file, atomic_folder, write_bytes
from med_hf.cli import main
from med_hf.image_files import write_result
from med_hf.image_processing_med import _orient, load_image
from med_hf.pipeline_med import MEDInpaintPipeline

cv2 = pytest.importorskip("cv2")

WIDTH, HEIGHT = 96, 64
HOLE = (slice(20, 44), slice(30, 66))  # rows, columns of the white rectangle in `hole_mask`
ERROR = "med-inpaint: error: "
WARNING = "med-inpaint: warning: "
EXIF_ORIENTATION = 0x0112


# --- fixtures and helpers --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """The tiny preset, working at 64 px (one network pass per photo is enough here), saved as a MEDModel folder."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny") / "model"
    MEDModel(MEDConfig.from_preset("tiny", image_size=64)).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def loaded_pipeline(model_dir) -> MEDInpaintPipeline:
    return MEDInpaintPipeline.from_pretrained(model_dir)


@pytest.fixture(autouse=True)
def reuse_loaded_model(monkeypatch, model_dir, loaded_pipeline):
    """The CLI loads `model_dir` once per module rather than once per call (any other folder really loads)."""
    real = MEDInpaintPipeline.from_pretrained.__func__

    def from_pretrained(cls, path=None, **kwargs):
        return loaded_pipeline if path is not None and Path(path) == model_dir else real(cls, path, **kwargs)

    monkeypatch.setattr(MEDInpaintPipeline, "from_pretrained", classmethod(from_pretrained))


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if the CLI gets as far as loading a model: refusals must come first."""

    def refuse(args):
        raise AssertionError("the model was loaded although the command should have been refused first")

    monkeypatch.setattr(med_hf.cli, "_load_pipeline", refuse)


def noise(channels: int = 3, dtype=np.uint8, size: tuple[int, int] = (WIDTH, HEIGHT), seed: int = 0) -> np.ndarray:
    """Random pixels (H, W, C), or (H, W) for one channel: nothing is symmetric, every value is different."""
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0]) + ((channels,) if channels > 1 else ())
    return rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True)


def gradient16(size: tuple[int, int] = (WIDTH, HEIGHT)) -> np.ndarray:
    """Smooth 16-bit grey (H, W) using the whole range, with low bytes that differ from the high bytes."""
    y, x = np.mgrid[0 : size[1], 0 : size[0]]
    return np.rint((x / (size[0] - 1) * 0.7 + y / (size[1] - 1) * 0.3) * 65535).astype(np.uint16) ^ 0x00A5


def hole_mask(size: tuple[int, int] = (WIDTH, HEIGHT), box: tuple[slice, slice] = HOLE) -> Image.Image:
    mask = np.zeros((size[1], size[0]), np.uint8)
    mask[box] = 255
    return Image.fromarray(mask)


def hole(size: tuple[int, int] = (WIDTH, HEIGHT)) -> np.ndarray:
    return np.asarray(hole_mask(size)) > 127


def save_photo(path: Path, seed: int = 0, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(noise(seed=seed)).save(path, **options)
    return path


def save_mask(path: Path, size: tuple[int, int] = (WIDTH, HEIGHT)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    hole_mask(size).save(path)
    return path


def run(capsys, *args) -> tuple[int, str, str]:
    code = main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error(err: str) -> str:
    """The only line on stderr, which must be an error."""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(ERROR), err
    return lines[0]


def warnings_in(err: str) -> list[str]:
    lines = err.splitlines()
    assert all(line.startswith(WARNING) for line in lines), err
    return lines


def snapshot(root: Path) -> dict[str, str]:
    """Every entry under `root` (not following links): file hashes, link targets, folders."""
    entries = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            key = str(path.relative_to(root))
            if path.is_symlink():
                entries[key] = f"link to {os.readlink(path)}"
            elif path.is_dir():
                entries[key] = "folder"
            else:
                entries[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return entries


def read16(path: Path) -> np.ndarray:
    """A 16-bit file as OpenCV stores it, channels turned to RGB(A)."""
    pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert pixels is not None and pixels.dtype == np.uint16, path
    return pixels if pixels.ndim == 2 else pixels[..., [2, 1, 0, 3][: pixels.shape[-1]]]


def write16(path: Path, pixels: np.ndarray) -> Path:
    """Write 16-bit grey or RGB(A) pixels with OpenCV (PIL cannot write 16-bit colour)."""
    bgr = pixels if pixels.ndim == 2 else pixels[..., [2, 1, 0, 3][: pixels.shape[-1]]]
    assert cv2.imwrite(str(path), np.ascontiguousarray(bgr))
    return path


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def with_png_chunk(png: bytes, kind: bytes, data: bytes) -> bytes:
    """`png` with a chunk added right after its header chunk (IHDR is always 13 bytes: 8 + 12 + 13 = 33)."""
    return png[:33] + png_chunk(kind, data) + png[33:]


def exif_bytes(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    return exif.tobytes()


def exif_upright(array: np.ndarray, orientation: int) -> np.ndarray:
    """`array` (H, W[, C]) turned as PIL's `ImageOps.exif_transpose` turns an image with that EXIF orientation."""
    height, width = array.shape[:2]
    index = Image.fromarray(np.arange(height * width, dtype=np.int32).reshape(height, width))
    index.info["exif"] = exif_bytes(orientation)
    order = np.asarray(ImageOps.exif_transpose(index))
    return array.reshape(height * width, *array.shape[2:])[order]


def srgb_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


# --- 1. an output never replaces an input ----------------------------------------------------------------


@pytest.fixture
def tree(tmp_path, monkeypatch) -> Path:
    """Inputs in every layout the spellings below need; the working directory is `tmp_path`."""
    save_photo(tmp_path / "d" / "a.png")
    save_mask(tmp_path / "d" / "m.png")
    save_photo(tmp_path / "e" / "a.jpg", quality=95)  # its mask e/a.png is where e/ would put the result
    save_mask(tmp_path / "e" / "a.png")
    for name, seed in (("a.png", 1), ("b.jpg", 2)):
        save_photo(tmp_path / "imgs" / name, seed=seed)
        save_mask(tmp_path / "masks" / f"{Path(name).stem}.png")
    save_photo(tmp_path / "both" / "a.png")
    save_mask(tmp_path / "both" / "a_mask.png")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _link(target: str, name: str) -> str:
    Path(name).parent.mkdir(parents=True, exist_ok=True)
    os.symlink(Path(target).resolve(), name)
    return name


def _hard_link(target: str, name: str) -> str:
    Path(name).parent.mkdir(parents=True, exist_ok=True)
    os.link(target, name)
    return name


def _in_out(link: str) -> str:
    """The output folder "out", which holds `link`."""
    return str(Path(link).parent)


ONE_FILE = ["--image", "d/a.png", "--mask", "d/m.png", "--output"]
FOLDERS = ["--image", "imgs", "--mask", "masks", "--output"]
SPELLINGS = {
    "same string": lambda tmp: [*ONE_FILE, "d/a.png"],
    "the mask": lambda tmp: [*ONE_FILE, "d/m.png"],
    "absolute for relative": lambda tmp: [*ONE_FILE, str(tmp / "d" / "a.png")],
    "relative for absolute": lambda tmp: ["--image", str(tmp / "d/a.png"), "--mask", "d/m.png", "--output", "d/a.png"],
    "dot slash": lambda tmp: [*ONE_FILE, "./d/a.png"],
    "dir/../dir": lambda tmp: [*ONE_FILE, "d/../d/a.png"],
    "double slash": lambda tmp: [*ONE_FILE, "d//a.png"],
    "symlink to the input": lambda tmp: [*ONE_FILE, _link("d/a.png", "link.png")],
    "symlink to the mask": lambda tmp: [*ONE_FILE, _link("d/m.png", "link.png")],
    "symlink to the input's folder": lambda tmp: [*ONE_FILE, f"{_link('d', 'dlink')}/a.png"],
    "hard link": lambda tmp: [*ONE_FILE, _hard_link("d/a.png", "hard.png")],
    "existing folder holding the input's name": lambda tmp: [*ONE_FILE, "d/"],
    "existing folder without slash": lambda tmp: [*ONE_FILE, "d"],
    "folder symlink holding the input's name": lambda tmp: [*ONE_FILE, f"{_link('d', 'dlink')}/"],
    "existing folder where the result is the mask": lambda tmp: [
        "--image",
        "e/a.jpg",
        "--mask",
        "e/a.png",
        "--output",
        "e",
    ],
    "photo folder": lambda tmp: [*FOLDERS, "imgs"],
    "photo folder with trailing slash": lambda tmp: [*FOLDERS, "imgs/"],
    "photo folder ./ and //": lambda tmp: [*FOLDERS, "./imgs//"],
    "photo folder via ..": lambda tmp: [*FOLDERS, "masks/../imgs"],
    "photo folder absolute": lambda tmp: [*FOLDERS, str(tmp / "imgs")],
    "symlink to the photo folder": lambda tmp: [*FOLDERS, _link("imgs", "ilink")],
    "mask folder": lambda tmp: [*FOLDERS, "masks/"],
    "symlink to the mask folder": lambda tmp: [*FOLDERS, _link("masks", "mlink")],
    "photo folder = mask folder = output folder": lambda tmp: [
        "--image",
        "both",
        "--mask",
        "both/",
        "--output",
        "./both",
    ],
    "result file hard-linked to a photo": lambda tmp: [*FOLDERS, _in_out(_hard_link("imgs/a.png", "out/a.png"))],
    "result file a symlink to a mask": lambda tmp: [*FOLDERS, _in_out(_link("masks/b.png", "out/b.png"))],
}


@pytest.mark.parametrize("spelling", list(SPELLINGS))
def test_an_output_that_is_an_input_is_refused_however_spelled(capsys, tree, no_model, spelling):
    args = SPELLINGS[spelling](tree)
    before = snapshot(tree)
    code, out, err = run(capsys, *args)
    assert code == 1
    line = one_error(err)
    assert "replace" in line, line
    assert out == ""
    assert snapshot(tree) == before  # inputs unchanged, nothing new written


def test_a_case_variant_of_an_input_is_refused(capsys, tmp_path, no_model):
    photo = save_photo(tmp_path / "Case" / "a.png")
    mask = save_mask(tmp_path / "Case" / "m.png")
    if not (tmp_path / "case" / "A.PNG").exists():
        pytest.skip(f"{tmp_path} is on a case-sensitive file system: case variants name different files")
    before = snapshot(tmp_path)
    code, _, err = run(capsys, "--image", photo, "--mask", mask, "--output", tmp_path / "CASE" / "A.PNG")
    assert code == 1
    assert "replace" in one_error(err)
    assert snapshot(tmp_path) == before


# --- 2. no result replaces another ----------------------------------------------------------------------


def test_photos_sharing_an_output_name_all_fail_and_none_is_written(capsys, model_dir, tmp_path):
    images, masks, output = tmp_path / "imgs", tmp_path / "masks", tmp_path / "out"
    for seed, name in enumerate(("a.jpg", "a.png", "b.png", "c.tif", "c.TIFF")):
        save_photo(images / name, seed=seed)
    for name in ("a.png", "b.png", "c.png"):
        save_mask(masks / name)
    code, out, err = run(capsys, "--image", images, "--mask", masks, "--output", output, "--model", model_dir)
    assert code == 1
    errors = err.splitlines()
    assert len(errors) == 4, err
    for line, name in zip(errors, ("a.jpg", "a.png", "c.TIFF", "c.tif"), strict=True):
        assert line.startswith(f"{ERROR}{images / name}: "), line
        assert "would both be written to" in line
    assert "a.jpg and a.png" in errors[0] and "c.TIFF and c.tif" in errors[2]
    assert sorted(p.name for p in output.iterdir()) == ["b.png"]
    assert out.startswith("1 inpainted, 4 failed")


def test_names_differing_only_in_case_share_an_output(capsys, model_dir, tmp_path):
    """A.jpg and a.png give A.png and a.png: one file wherever names ignore case (macOS, Windows, a USB stick)."""
    images, masks, output = tmp_path / "imgs", tmp_path / "masks", tmp_path / "out"
    save_photo(images / "A.jpg", seed=1)
    save_photo(images / "a.png", seed=2)
    for name in ("A.png", "a_mask.png"):
        save_mask(masks / name)
    code, out, err = run(capsys, "--image", images, "--mask", masks, "--output", output, "--model", model_dir)
    assert code == 1
    assert len(err.splitlines()) == 2 and "would both be written to" in err, err
    assert not output.exists() or list(output.iterdir()) == []
    assert out.startswith("0 inpainted, 2 failed")


@pytest.mark.parametrize("names", [("a.png", "a.jpg"), ("a.png", "a_mask.png")], ids=["extensions", "suffix"])
def test_an_ambiguous_mask_fails_that_photo_only(capsys, model_dir, tmp_path, names):
    images, masks, output = tmp_path / "imgs", tmp_path / "masks", tmp_path / "out"
    save_photo(images / "a.png", seed=1)
    save_photo(images / "b.png", seed=2)
    for name in (*names, "b.png"):
        save_mask(masks / name)
    code, out, err = run(capsys, "--image", images, "--mask", masks, "--output", output, "--model", model_dir)
    assert code == 1
    line = one_error(err)
    assert line.startswith(f"{ERROR}{images / 'a.png'}: ambiguous mask")
    assert all(name in line for name in names)
    assert sorted(p.name for p in output.iterdir()) == ["b.png"]
    assert out.startswith("1 inpainted, 1 failed")


# --- 3. faithful or stated format conversions ------------------------------------------------------------


def inpaint(capsys, model_dir, image: Path, output: Path, mask: Path | None = None, *extra) -> tuple[int, str, str]:
    if mask is None:
        size = Image.open(image).size
        mask = save_mask(image.with_name(f"{image.stem}_hole.png"), size)
    return run(capsys, "--image", image, "--mask", mask, "--output", output, "--model", model_dir, *extra)


@pytest.mark.parametrize("extension", [".jpg", ".webp", ".bmp"])
def test_16bit_grey_to_an_8bit_format_is_scaled_and_stated(capsys, model_dir, tmp_path, extension):
    grey = gradient16()
    image = write16(tmp_path / "grey16.png", grey)
    output = tmp_path / f"result{extension}"
    code, _, err = inpaint(capsys, model_dir, image, output)
    assert code == 0, err
    (warning,) = warnings_in(err)
    assert "holds 8 bits per channel" in warning and "16-bit" in warning
    with Image.open(output) as result:
        pixels = np.asarray(result.convert("L")).astype(int)
    expected = np.rint(grey / 257.0).astype(int)
    known = ~hole()
    if extension == ".jpg":  # lossy: close, and certainly not white
        assert np.abs(pixels - expected)[known].mean() < 1.0
        assert pixels[known].min() < 30
    else:
        np.testing.assert_array_equal(pixels[known], expected[known])


@pytest.mark.parametrize("extension", [".png", ".tif"])
@pytest.mark.parametrize("channels", [1, 3, 4], ids=["grey", "rgb", "rgba"])
def test_16bit_stays_16bit_with_known_pixels_bit_identical(capsys, model_dir, tmp_path, extension, channels):
    pixels = noise(channels, np.uint16)
    image = write16(tmp_path / f"photo16{extension}", pixels)
    output = tmp_path / f"result{extension}"
    code, _, err = inpaint(capsys, model_dir, image, output)
    assert code == 0, err
    assert err == ""  # nothing to state: nothing was converted
    result = read16(output)
    assert result.shape == pixels.shape
    np.testing.assert_array_equal(result[~hole()], pixels[~hole()])
    changed = np.any(np.atleast_3d(result != pixels), axis=-1)
    assert changed[hole()].mean() > 0.9


@pytest.mark.parametrize("channels", [3, 4], ids=["rgb", "rgba"])
def test_16bit_colour_to_jpeg_is_8bit_and_stated(capsys, model_dir, tmp_path, channels):
    pixels = np.dstack([gradient16()] * channels)
    pixels[..., 0] ^= 0x3C00  # colour, not grey
    image = write16(tmp_path / "photo16.png", pixels)
    output = tmp_path / "result.jpg"
    code, _, err = inpaint(capsys, model_dir, image, output)
    assert code == 0, err
    warnings = warnings_in(err)
    assert any("JPEG holds 8 bits per channel" in line for line in warnings)
    assert any("transparency is dropped" in line for line in warnings) == (channels == 4)
    with Image.open(output) as result:
        assert result.mode == "RGB"
        written = np.asarray(result).astype(int)
    expected = np.rint(pixels[..., :3] / 257.0).astype(int)
    assert np.abs(written - expected)[~hole()].mean() < 2.5  # JPEG is lossy, but close: not white, not 16-bit garbage


def test_16bit_grey_in_any_byte_order_is_written_as_16bit(tmp_path):
    grey = noise(1, np.uint16)
    for mode, dtype in (("I;16L", "<u2"), ("I;16B", ">u2"), ("I;16", "<u2")):
        image = Image.frombytes(mode, (WIDTH, HEIGHT), grey.astype(dtype).tobytes())
        for extension in (".png", ".tif"):
            assert write_result(image, tmp_path / f"grey{extension}") == [], mode
            np.testing.assert_array_equal(read16(tmp_path / f"grey{extension}"), grey, err_msg=f"{mode} {extension}")


def test_16bit_grey_with_alpha_stays_grey_16bit(capsys, model_dir, tmp_path):
    """PIL opens a 16-bit grey + alpha PNG as 8-bit RGBA; the result must keep both the depth and the greyness."""
    pixels = noise(2, np.uint16)
    raw = b"".join(b"\0" + row.astype(">u2").tobytes() for row in pixels)
    header = struct.pack(">IIBBBBB", WIDTH, HEIGHT, 16, 4, 0, 0, 0)  # 16-bit, colour type 4: grey + alpha
    image = tmp_path / "la16.png"
    image.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(raw))
        + png_chunk(b"IEND", b"")
    )
    output = tmp_path / "result.png"
    code, _, err = inpaint(capsys, model_dir, image, output)
    assert code == 0, err
    assert err == ""
    assert output.read_bytes()[24:26] == bytes([16, 4])  # the header: 16 bits, grey + alpha
    result = cv2.imread(str(output), cv2.IMREAD_UNCHANGED)
    assert result.dtype == np.uint16
    np.testing.assert_array_equal(result[..., 0], result[..., 1])  # OpenCV reads grey + alpha as BGRA
    grey_alpha = result[..., [0, 3]]
    np.testing.assert_array_equal(grey_alpha[~hole()], pixels[~hole()])


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orient_matches_exif_transpose(orientation):
    pixels = noise(3)
    reference = Image.fromarray(pixels)
    reference.info["exif"] = exif_bytes(orientation)
    np.testing.assert_array_equal(_orient(pixels, orientation), np.asarray(ImageOps.exif_transpose(reference)))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_16bit_colour_is_turned_upright_once(tmp_path, orientation):
    """The EXIF orientation of a 16-bit colour PNG, and the orientation tag of a 16-bit colour TIFF, are applied
    exactly once: OpenCV 5 applies a TIFF's tag itself when decoding, PIL reads the tag too."""
    tifffile = pytest.importorskip("tifffile")
    pixels = noise(3, np.uint16, size=(6, 4))
    png = cv2.imencode(".png", np.ascontiguousarray(pixels[..., ::-1]))[1].tobytes()
    (tmp_path / "photo.png").write_bytes(with_png_chunk(png, b"eXIf", exif_bytes(orientation)[6:]))
    tifffile.imwrite(tmp_path / "photo.tif", pixels, photometric="rgb", extratags=[(274, "H", 1, orientation, True)])
    expected = exif_upright(pixels, orientation)
    for name in ("photo.png", "photo.tif"):
        loaded = load_image(tmp_path / name)
        assert isinstance(loaded, np.ndarray) and loaded.dtype == np.uint16, name
        np.testing.assert_array_equal(loaded, expected, err_msg=name)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_a_tiff_with_an_orientation_tag_is_turned_upright(tmp_path, orientation, dtype):
    """Pillow 12 scrambles uncompressed TIFFs tagged with orientations 5 to 8; `load_image` must not."""
    tifffile = pytest.importorskip("tifffile")
    pixels = noise(1, dtype, size=(6, 4))
    tifffile.imwrite(tmp_path / "grey.tif", pixels, extratags=[(274, "H", 1, orientation, True)])
    np.testing.assert_array_equal(np.asarray(load_image(tmp_path / "grey.tif")), exif_upright(pixels, orientation))


def test_an_exif_rotated_16bit_colour_photo_end_to_end(capsys, model_dir, tmp_path):
    stored = noise(3, np.uint16)
    png = cv2.imencode(".png", np.ascontiguousarray(stored[..., ::-1]))[1].tobytes()
    image = tmp_path / "rotated16.png"
    image.write_bytes(with_png_chunk(png, b"eXIf", exif_bytes(6)[6:]))  # stored 96x64, upright 64x96
    upright = np.rot90(stored, -1)
    mask = save_mask(tmp_path / "mask.png", (HEIGHT, WIDTH))
    output = tmp_path / "result.png"
    code, _, err = inpaint(capsys, model_dir, image, output, mask)
    assert code == 0, err
    result = read16(output)
    assert result.shape == upright.shape
    known = ~hole((HEIGHT, WIDTH))
    np.testing.assert_array_equal(result[known], upright[known])


def _animated_gif(path: Path) -> None:
    frames = [Image.fromarray(noise(seed=seed)) for seed in range(3)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)


def _multipage_tiff(path: Path) -> None:
    frames = [Image.fromarray(noise(seed=seed)) for seed in range(2)]
    frames[0].save(path, save_all=True, append_images=frames[1:])


@pytest.mark.parametrize("make", [_animated_gif, _multipage_tiff], ids=["gif", "tiff"])
def test_animations_and_multipage_files_are_refused_with_the_reason(capsys, model_dir, tmp_path, make):
    image = tmp_path / f"frames{'.gif' if make is _animated_gif else '.tif'}"
    make(image)
    mask = save_mask(tmp_path / "mask.png")
    output = tmp_path / "out" / "result.png"
    code, _, err = run(capsys, "--image", image, "--mask", mask, "--output", output, "--model", model_dir)
    assert code == 1
    line = one_error(err)
    assert str(image) in line and "animated or multi-page" in line and "frames" in line
    assert not output.exists()


def test_an_all_black_mask_writes_the_photo_and_says_so(capsys, model_dir, tmp_path):
    image = save_photo(tmp_path / "photo.png")
    mask = tmp_path / "black.png"
    Image.new("L", (WIDTH, HEIGHT), 0).save(mask)
    output = tmp_path / "result.png"
    code, _, err = run(capsys, "--image", image, "--mask", mask, "--output", output, "--model", model_dir)
    assert code == 0
    (warning,) = warnings_in(err)
    assert "no white pixel" in warning and str(mask) in warning
    with Image.open(output) as result:
        np.testing.assert_array_equal(np.asarray(result), noise())


def test_rgba_to_jpeg_states_the_transparency_is_dropped(capsys, model_dir, tmp_path):
    image = tmp_path / "rgba.png"
    Image.fromarray(noise(4)).save(image)
    output = tmp_path / "result.jpg"
    code, _, err = inpaint(capsys, model_dir, image, output)
    assert code == 0, err
    (warning,) = warnings_in(err)
    assert "transparency is dropped" in warning
    assert Image.open(output).mode == "RGB"


def test_lossless_webp_keeps_the_colour_of_transparent_pixels(capsys, model_dir, tmp_path):
    pixels = noise(4)
    pixels[:10, :, 3] = 0  # fully transparent rows whose colour a lossless file must still keep
    image = tmp_path / "rgba.png"
    Image.fromarray(pixels).save(image)
    output = tmp_path / "result.webp"
    code, _, err = inpaint(capsys, model_dir, image, output)
    assert code == 0, err
    assert err == ""
    with Image.open(output) as result:
        written = np.asarray(result.convert("RGBA"))
    np.testing.assert_array_equal(written[~hole()], pixels[~hole()])


def test_cmyk_input_states_the_conversion_and_drops_its_cmyk_profile(capsys, model_dir, tmp_path):
    cmyk_profile = bytearray(srgb_profile())
    cmyk_profile[16:20] = b"CMYK"  # the header's colour space: this profile describes CMYK data
    image = tmp_path / "cmyk.jpg"
    Image.fromarray(noise()).convert("CMYK").save(image, quality=95, icc_profile=bytes(cmyk_profile))
    output = tmp_path / "result.jpg"
    code, _, err = inpaint(capsys, model_dir, image, output)
    assert code == 0, err
    warnings = warnings_in(err)
    assert any("CMYK image converted to RGB" in line for line in warnings)
    assert any("profile" in line and "CMYK" in line for line in warnings)
    with Image.open(output) as result:
        assert result.mode == "RGB"
        assert "icc_profile" not in result.info  # a CMYK profile on RGB pixels would be wrong


@pytest.mark.parametrize("extension", [".png", ".jpg", ".webp", ".tif"])
def test_the_colour_profile_is_kept(capsys, model_dir, tmp_path, extension):
    profile = srgb_profile()
    image = save_photo(tmp_path / "photo.png", icc_profile=profile)
    output = tmp_path / f"result{extension}"
    code, _, err = inpaint(capsys, model_dir, image, output)
    assert code == 0, err
    assert err == ""
    assert Image.open(output).info.get("icc_profile") == profile


def test_bmp_states_the_colour_profile_is_dropped(capsys, model_dir, tmp_path):
    image = save_photo(tmp_path / "photo.png", icc_profile=srgb_profile())
    code, _, err = inpaint(capsys, model_dir, image, tmp_path / "result.bmp")
    assert code == 0, err
    (warning,) = warnings_in(err)
    assert "BMP cannot hold the colour profile" in warning


@pytest.mark.parametrize(("extension", "kept"), [(".png", True), (".tif", False)])
def test_the_colour_profile_of_16bit_colour_is_kept_or_stated(capsys, model_dir, tmp_path, extension, kept):
    profile = srgb_profile()
    png = cv2.imencode(".png", noise(3, np.uint16))[1].tobytes()
    image = tmp_path / "photo16.png"
    image.write_bytes(with_png_chunk(png, b"iCCP", b"sRGB\0\0" + zlib.compress(profile)))
    assert Image.open(image).info["icc_profile"] == profile
    output = tmp_path / f"result{extension}"
    code, _, err = inpaint(capsys, model_dir, image, output)
    assert code == 0, err
    assert read16(output).dtype == np.uint16
    if kept:
        assert err == ""
        assert Image.open(output).info.get("icc_profile") == profile
    else:
        (warning,) = warnings_in(err)
        assert "colour profile (ICC) is not kept" in warning


@pytest.mark.parametrize("name", ["result.gif", "result.txt", "result", "result.GIF", "result.png.partial"])
def test_an_output_format_that_cannot_be_written_is_refused_before_the_model_loads(capsys, tmp_path, no_model, name):
    image, mask = save_photo(tmp_path / "photo.png"), save_mask(tmp_path / "mask.png")
    before = snapshot(tmp_path)
    code, _, err = run(capsys, "--image", image, "--mask", mask, "--output", tmp_path / "out" / name)
    assert code == 1
    line = one_error(err)
    assert line.startswith(f"{ERROR}--output: cannot write results as") and ".png" in line
    assert snapshot(tmp_path) == before


# --- 4. NaN is never an output ---------------------------------------------------------------------------

CORRUPTED_TENSOR = "decoder.up_blocks.1.conv.weight"


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_non_finite_weights_are_refused_naming_the_tensor(capsys, model_dir, tmp_path, value):
    corrupt = tmp_path / "corrupt"
    shutil.copytree(model_dir, corrupt)
    weights = load_file(corrupt / "model.safetensors")
    weights[CORRUPTED_TENSOR].view(-1)[7] = value
    save_file(weights, corrupt / "model.safetensors", metadata={"format": "pt"})

    with pytest.raises(ValueError, match=f"{CORRUPTED_TENSOR} holds NaN or infinite values"):
        MEDModel.from_pretrained(corrupt)
    capsys.readouterr()  # transformers' loading bar

    image, mask = save_photo(tmp_path / "photo.png"), save_mask(tmp_path / "mask.png")
    output = tmp_path / "out" / "result.png"
    code, _, err = run(capsys, "--image", image, "--mask", mask, "--output", output, "--model", corrupt)
    assert code == 1
    line = one_error(err)
    assert line.startswith(f"{ERROR}cannot load the model {corrupt}: ") and CORRUPTED_TENSOR in line
    assert not output.parent.exists()


def test_the_model_refuses_non_finite_known_pixels_and_ignores_them_in_the_hole(tiny_model):
    torch.manual_seed(1)
    pixels = torch.rand(1, 3, 64, 64) * 2 - 1
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 16:40, 20:50] = 1
    with torch.inference_mode():
        for bad in (float("nan"), float("inf"), -float("inf")):
            known = pixels.clone()
            known[0, 1, 5, 7] = bad
            with pytest.raises(ValueError, match="NaN or infinite values outside the hole"):
                tiny_model(pixel_values=known, mask=mask)
        reference = tiny_model(pixel_values=torch.where(mask.bool(), 0.0, pixels), mask=mask).reconstruction
        hidden = pixels.clone()
        hidden[..., 16:40, 20:35] = float("nan")
        hidden[..., 16:40, 35:50] = float("inf")
        output = tiny_model(pixel_values=hidden, mask=mask).reconstruction
    assert torch.isfinite(output).all()
    assert torch.equal(output, reference)


def _nan_forward(self, pixel_values, mask, **kwargs):
    from med_hf.modeling_med import MEDInpaintingOutput

    return MEDInpaintingOutput(reconstruction=torch.full_like(pixel_values, float("nan")))


def test_a_non_finite_result_is_never_written(capsys, model_dir, tmp_path, monkeypatch, loaded_pipeline):
    monkeypatch.setattr(MEDModel, "forward", _nan_forward)
    with pytest.raises(FloatingPointError, match="NaN or infinite"):
        loaded_pipeline(image=Image.fromarray(noise()), mask_image=hole_mask())

    image, mask = save_photo(tmp_path / "photo.png"), save_mask(tmp_path / "mask.png")
    output = tmp_path / "out" / "result.png"
    code, _, err = run(capsys, "--image", image, "--mask", mask, "--output", output, "--model", model_dir)
    assert code == 1
    line = one_error(err)
    assert str(image) in line and "NaN or infinite" in line
    assert not output.parent.exists()


# --- 5. file modes ---------------------------------------------------------------------------------------


@pytest.fixture(params=[0o022, 0o077], ids=["umask022", "umask077"])
def umask(request):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_cli_results_get_the_umask(capsys, model_dir, tmp_path, umask):
    image, mask = save_photo(tmp_path / "photo.png"), save_mask(tmp_path / "mask.png")
    output = tmp_path / "new" / "result.png"
    code, _, err = run(capsys, "--image", image, "--mask", mask, "--output", output, "--model", model_dir)
    assert code == 0, err
    assert mode_of(output) == 0o666 & ~umask
    assert mode_of(output.parent) == 0o777 & ~umask


def test_an_interrupted_folder_replacement_keeps_the_old_folder(tmp_path, monkeypatch):
    import med_hf.atomic_files

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("old")

    def interrupted(temporary, path):
        raise KeyboardInterrupt

    monkeypatch.setattr(med_hf.atomic_files, "_rename", interrupted)
    with pytest.raises(KeyboardInterrupt), atomic_folder(tmp_path / "model", replace=True) as folder:
        (folder / "config.json").write_text("new")
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    assert (tmp_path / "model" / "config.json").read_text() == "old"


def test_atomic_files_and_folders_get_the_umask(tmp_path, umask):
    with atomic_file(tmp_path / "report.txt", "w") as handle:
        handle.write("done")
    write_bytes(tmp_path / "result.bin", b"\0")
    with atomic_folder(tmp_path / "exported") as folder:
        (folder / "config.json").write_text("{}")
    for file in ("report.txt", "result.bin"):
        assert mode_of(tmp_path / file) == 0o666 & ~umask, file
    assert mode_of(tmp_path / "exported") == 0o777 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exported", "report.txt", "result.bin"]


# --- 6. one-line errors, Ctrl-C --------------------------------------------------------------------------


def _truncated_safetensors(folder: Path) -> str:
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return "truncated or corrupt"


def _malicious_pickle(folder: Path) -> str:
    (folder / "model.safetensors").unlink()
    torch.save({"encoder.weight": _Payload(folder.parent / "PWNED")}, folder / "pytorch_model.bin")
    return "refused for safety"


class _Payload:
    """Unpickling this would run a command that creates `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _config_not_json(folder: Path) -> str:
    (folder / "config.json").write_text("{'image_size': 256,")
    return "not a valid JSON file"


def _empty_folder(folder: Path) -> str:
    shutil.rmtree(folder)
    folder.mkdir()
    return str(folder)


@pytest.mark.parametrize(
    "spoil", [_truncated_safetensors, _malicious_pickle, _config_not_json, _empty_folder], ids=lambda f: f.__name__[1:]
)
def test_a_corrupt_or_malicious_model_is_one_line(capsys, model_dir, tmp_path, spoil):
    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    reason = spoil(folder)
    image, mask = save_photo(tmp_path / "photo.png"), save_mask(tmp_path / "mask.png")
    output = tmp_path / "out" / "result.png"
    code, _, err = run(capsys, "--image", image, "--mask", mask, "--output", output, "--model", folder)
    assert code == 1
    line = one_error(err)
    assert line.startswith(f"{ERROR}cannot load the model {folder}: ") and reason in line, line
    assert not (tmp_path / "PWNED").exists()
    assert not output.exists()


def _photo_folders(root: Path, count: int, size: tuple[int, int] = (WIDTH, HEIGHT)) -> tuple[Path, Path]:
    images, masks = root / "imgs", root / "masks"
    images.mkdir()
    for index in range(count):
        Image.fromarray(noise(size=size, seed=index)).save(images / f"p{index}.png")
        save_mask(masks / f"p{index}.png", size)
    return images, masks


def assert_complete_results(folder: Path, names: list[str], size: tuple[int, int] = (WIDTH, HEIGHT)) -> None:
    assert sorted(p.name for p in folder.iterdir()) == sorted(names)  # nothing partial, hidden or not
    for name in names:
        with Image.open(folder / name) as result:
            result.load()
            assert result.size == size


def test_a_too_large_photo_names_the_commands_own_option(capsys, model_dir, tmp_path):
    images, masks = _photo_folders(tmp_path, 1)
    code, _, err = run(
        capsys,
        "--image",
        images,
        "--mask",
        masks,
        "--output",
        tmp_path / "out",
        "--model",
        model_dir,
        "--max-pixels",
        "6000",
    )
    assert code == 1
    line = one_error(err)
    assert line.startswith(f"{ERROR}{images / 'p0.png'}: image of 96x64 pixels")
    assert line.endswith("or raise --max-pixels if this machine has the memory.")
    assert "MAX_IMAGE_PIXELS" not in line and "max_pixels" not in line


@pytest.mark.parametrize(
    ("sent", "code", "word"), [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")]
)
def test_ctrl_c_in_a_folder_run_of_the_installed_script(model_dir, tmp_path, sent, code, word):
    script = shutil.which("med-inpaint")
    assert script, "the med-inpaint console script is not installed (pip install -e .)"
    size = (128, 128)  # with --hd-strategy original, seven photos are surely left when the first result appears
    images, masks = _photo_folders(tmp_path, 8, size)
    output = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    command = [script, "--image", images, "--mask", masks, "--output", output, "--model", model_dir]
    process = subprocess.Popen(
        [*command, "--hd-strategy", "original"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    deadline = time.monotonic() + 120
    while not (output.is_dir() and any(not p.name.startswith(".") for p in output.iterdir())):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.005)
    process.send_signal(sent)
    out, err = process.communicate(timeout=60)
    assert process.returncode == code, err
    line = one_error(err)
    assert word in line and "finished results are kept" in line
    done = sorted(p.name for p in output.iterdir())
    assert not [name for name in done if name.startswith(".") or name.endswith(PARTIAL_SUFFIX)], done
    assert 1 <= len(done) < 8
    assert_complete_results(output, done, size)
    assert f"{len(done)} of 8 photos done" in line
    assert out == ""


def test_ctrl_c_while_writing_the_second_result(capsys, model_dir, tmp_path, monkeypatch):
    images, masks = _photo_folders(tmp_path, 3)
    output = tmp_path / "out"
    real_save = Image.Image.save
    calls = []

    def save(self, fp, format=None, **params):
        calls.append(fp)
        if len(calls) == 2:
            fp.write(b"\x89PNG\r\n\x1a\n half a file")
            raise KeyboardInterrupt
        return real_save(self, fp, format, **params)

    monkeypatch.setattr(Image.Image, "save", save)
    code, out, err = run(capsys, "--image", images, "--mask", masks, "--output", output, "--model", model_dir)
    assert code == 130
    assert one_error(err) == f"{ERROR}interrupted; 1 of 3 photos done, finished results are kept"
    assert out == ""
    assert_complete_results(output, ["p0.png"])


def test_ctrl_c_while_the_model_loads(capsys, tmp_path, monkeypatch):
    images, masks = _photo_folders(tmp_path, 3)

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(med_hf.cli, "_load_pipeline", interrupted)
    code, out, err = run(capsys, "--image", images, "--mask", masks, "--output", tmp_path / "out")
    assert code == 130
    assert one_error(err) == f"{ERROR}interrupted; 0 of 3 photos done, finished results are kept"
    assert not (tmp_path / "out").exists()


def test_an_unwritable_output_folder_is_named(capsys, model_dir, tmp_path):
    image, mask = save_photo(tmp_path / "photo.png"), save_mask(tmp_path / "mask.png")
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        try:
            (folder / "probe").touch()
        except PermissionError:
            pass
        else:
            pytest.skip("this user (root?) can write into a read-only folder")
        code, _, err = run(capsys, "--image", image, "--mask", mask, "--output", folder / "r.png", "--model", model_dir)
        assert code == 1
        line = one_error(err)
        assert str(folder) in line and "permission denied" in line.lower() and PARTIAL_SUFFIX not in line
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)


def test_a_refused_temporary_file_is_reported_with_the_folder_name(capsys, model_dir, tmp_path, monkeypatch):
    """What a read-only or full folder does even to root: the error names the user's folder."""
    image, mask = save_photo(tmp_path / "photo.png"), save_mask(tmp_path / "mask.png")
    folder = tmp_path / "out"
    real_open = os.open

    def refuse_partial_files(path, flags, mode=0o777, *args, **kwargs):
        if str(path).endswith(PARTIAL_SUFFIX):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, mode, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse_partial_files)
    code, _, err = run(capsys, "--image", image, "--mask", mask, "--output", folder / "r.png", "--model", model_dir)
    assert code == 1
    line = one_error(err)
    assert str(folder) in line and "Permission denied" in line and PARTIAL_SUFFIX not in line, line
    assert list(folder.iterdir()) == []


def test_a_result_path_taken_by_a_folder_is_named(capsys, model_dir, tmp_path):
    images, masks = _photo_folders(tmp_path, 2)
    output = tmp_path / "out"
    (output / "p0.png").mkdir(parents=True)
    code, out, err = run(capsys, "--image", images, "--mask", masks, "--output", output, "--model", model_dir)
    assert code == 1
    line = one_error(err)
    assert str(output / "p0.png") in line and PARTIAL_SUFFIX not in line, line
    assert out.startswith("1 inpainted, 1 failed")
    assert sorted(p.name for p in output.iterdir()) == ["p0.png", "p1.png"]
    assert list((output / "p0.png").iterdir()) == []


def test_file_names_with_a_newline_or_bytes_that_are_not_utf8_stay_one_line(capsys, model_dir, tmp_path):
    """A newline in a name would split the error line; a Latin-1 name cannot be printed to a strict UTF-8 stream."""
    images, masks, output = tmp_path / "imgs", tmp_path / "masks", tmp_path / "out"
    latin1 = os.fsdecode(b"caf\xe9.png")
    save_photo(images / "new\nline.png")  # no mask: fails, naming itself
    save_photo(images / latin1)
    save_mask(masks / latin1)
    code, out, err = run(capsys, "--image", images, "--mask", masks, "--output", output, "--model", model_dir)
    assert code == 1
    assert one_error(err) == f"{ERROR}{images}/new\\nline.png: no mask with a matching name in {masks}"
    assert out.startswith("1 inpainted, 1 failed")
    assert (output / latin1).is_file()

    result = tmp_path / latin1
    code, out, err = run(
        capsys, "--image", images / latin1, "--mask", masks / latin1, "--output", result, "--model", model_dir
    )
    assert (code, err) == (0, "")
    assert out.startswith(f"wrote {tmp_path}/caf\\xe9.png in ")
    assert result.is_file()


@pytest.fixture
def alarm():
    """Turn a hang into a failure after 30 s."""

    def hung(signum, frame):
        raise TimeoutError("med-inpaint hung")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(30)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("which", ["--image", "--mask"])
def test_a_pipe_or_device_is_refused_not_read(capsys, tmp_path, no_model, alarm, which):
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    paths = {"--image": save_photo(tmp_path / "photo.png"), "--mask": save_mask(tmp_path / "mask.png")}
    paths[which] = fifo
    code, _, err = run(capsys, *[str(p) for item in paths.items() for p in item], "--output", tmp_path / "r.png")
    assert code == 1
    line = one_error(err)
    assert f"{which}: {fifo} is not a file or folder" in line, line
    assert not (tmp_path / "r.png").exists()


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--mask-dilation", "-1"),
        ("--mask-blur", "-2"),
        ("--mask-blur", "nan"),
        ("--hd-crop-margin", "-5"),
        ("--max-pixels", "0"),
    ],
)
def test_impossible_option_values_are_usage_errors(capsys, tmp_path, no_model, option, value):
    image, mask = save_photo(tmp_path / "photo.png"), save_mask(tmp_path / "mask.png")
    with pytest.raises(SystemExit) as exit_info:
        main(["--image", str(image), "--mask", str(mask), "--output", str(tmp_path / "r.png"), option, value])
    assert exit_info.value.code == 2
    assert f"argument {option}: " in capsys.readouterr().err
    assert not (tmp_path / "r.png").exists()


def test_model_folder_config_is_json(model_dir):
    """The fixture model is a real saved folder (guards the corrupt-model tests against testing nothing)."""
    assert json.loads((model_dir / "config.json").read_text())["model_type"] == "med"
