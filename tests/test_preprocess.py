"""to_mnist on real Pillow images: every mode and polarity, real-world scans, and bad input."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import ExifTags, Image, ImageDraw, ImageOps

from digitflow.listing import IMAGE_EXTENSIONS
from digitflow.preprocess import (
    BlankImageError,
    EmptyFileError,
    ImageTooLargeError,
    PreprocessError,
    TruncatedImageError,
    UnreadableImageError,
    to_mnist,
)
from digitflow.preprocess.geometry import stroke_width
from digitflow.preprocess.paper import basis, frame


def draw_digit(kind: str) -> np.ndarray:
    """A real-looking MNIST digit: 28x28 uint8, white on black, in a 20x20 box, mass centred."""
    big = Image.new("L", (112, 112), 0)
    pen = ImageDraw.Draw(big)
    if kind == "0":
        pen.ellipse([(36, 20), (80, 96)], outline=255, width=11)
    elif kind == "1":
        pen.line([(58, 20), (58, 96)], fill=255, width=11)
    else:
        pen.line([(30, 25), (86, 25), (50, 96)], fill=255, width=11, joint="curve")
    digit = np.asarray(big.resize((28, 28), Image.Resampling.BOX))
    shift = np.round(14 - centre_of_mass(digit)).astype(int)
    return np.roll(digit, tuple(shift), axis=(0, 1))


def centre_of_mass(image: np.ndarray) -> np.ndarray:
    """(row, column) of the image's centre of mass."""
    rows, cols = np.indices(image.shape)
    total = image.sum(dtype=np.float64)
    return np.array([(rows * image).sum() / total, (cols * image).sum() / total])


def corr(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two images' pixels."""
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def page(
    digit: np.ndarray,
    size: tuple[int, int] = (160, 120),
    at: tuple[int, int] = (50, 30),
    scale: int = 2,
    paper: float | np.ndarray = 235.0,
) -> Image.Image:
    """Dark ink (30) on paper: the digit enlarged `scale` times with its top-left corner `at`."""
    side = 28 * scale
    glyph = Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC)
    coverage = np.zeros((size[1], size[0]), np.float32)
    coverage[at[1] : at[1] + side, at[0] : at[0] + side] = np.asarray(glyph) / 255.0
    pixels = paper * (1.0 - coverage) + 30.0 * coverage
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def encode(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    """The image as a file's bytes."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A real, tiny 1x1 PNG whose header (IHDR, CRC fixed) declares width x height pixels."""
    data = bytearray(encode(Image.new("L", (1, 1), 255)))
    ihdr = 8 + 8  # signature, then the IHDR chunk's length and type
    data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr - 4 : ihdr + 13]))
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


ZERO, ONE, SEVEN = draw_digit("0"), draw_digit("1"), draw_digit("7")
SCAN = page(SEVEN)
REFERENCE = to_mnist(encode(SCAN))


def ink_box(out: np.ndarray) -> tuple[int, int]:
    """Height and width of the non-zero pixels' bounding box."""
    rows, cols = np.flatnonzero(out.any(axis=1)), np.flatnonzero(out.any(axis=0))
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


@pytest.mark.parametrize("extension", sorted(IMAGE_EXTENSIONS))
def test_every_listed_extension_is_read(extension: str) -> None:
    # Listing and the Beam job pick files by these extensions: each must be a format to_mnist reads.
    data = encode(SCAN, Image.registered_extensions()[extension])
    assert corr(to_mnist(data), REFERENCE) > 0.95


def test_output_follows_mnist_conventions() -> None:
    assert REFERENCE.shape == (28, 28)
    assert REFERENCE.dtype == np.float32
    assert REFERENCE.min() == 0.0
    assert REFERENCE.max() == pytest.approx(1.0)
    assert max(ink_box(REFERENCE)) == 20
    assert np.abs(centre_of_mass(REFERENCE) - 14).max() <= 0.5
    assert corr(REFERENCE, SEVEN) > 0.9


@pytest.mark.parametrize("digit", [ZERO, ONE, SEVEN], ids=["0", "1", "7"])
def test_an_mnist_digit_survives_the_round_trip(digit: np.ndarray) -> None:
    out = to_mnist(encode(Image.fromarray(digit)))
    assert corr(out, digit) > 0.98
    assert np.abs(out - digit / 255.0).max() < 0.25


@pytest.mark.parametrize("digit", [ZERO, ONE, SEVEN], ids=["0", "1", "7"])
def test_both_polarities_give_the_same_digit(digit: np.ndarray) -> None:
    dark_on_white = to_mnist(encode(page(digit)))
    white_on_black = to_mnist(encode(ImageOps.invert(page(digit))))
    assert corr(dark_on_white, digit) > 0.9
    assert corr(white_on_black, dark_on_white) > 0.98


def in_mode(image: Image.Image, mode: str) -> Image.Image:
    """A grey 'L' image converted to `mode` the way real files carry it."""
    grey = np.asarray(image)
    if mode == "1":
        return image.convert("1", dither=Image.Dither.NONE)
    if mode == "I;16":
        return Image.fromarray(grey.astype(np.uint16) * np.uint16(257))
    if mode == "I":
        return Image.fromarray(grey.astype(np.int32) * 257)
    if mode == "P":
        return image.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=32)
    return image.convert(mode)


MODES = ["1", "L", "P", "RGB", "RGBA", "LA", "I;16", "I", "F", "CMYK", "YCbCr"]


@pytest.mark.parametrize("mode", MODES)
def test_every_pillow_mode_gives_the_same_digit(mode: str) -> None:
    image = in_mode(SCAN, mode)
    assert image.mode == mode
    assert corr(to_mnist(image), REFERENCE) > (0.9 if mode == "1" else 0.98)


@pytest.mark.parametrize(
    ("fmt", "mode"),
    [
        ("PNG", "1"),
        ("PNG", "P"),
        ("PNG", "LA"),
        ("PNG", "I;16"),
        ("JPEG", "RGB"),
        ("JPEG", "L"),
        ("JPEG", "CMYK"),
        ("TIFF", "CMYK"),
        ("TIFF", "I;16"),
        ("TIFF", "F"),
        ("BMP", "P"),
        ("GIF", "P"),
        ("WEBP", "RGB"),
    ],
)
def test_every_file_format_gives_the_same_digit(fmt: str, mode: str) -> None:
    data = encode(in_mode(SCAN, mode), fmt)
    assert corr(to_mnist(data), REFERENCE) > (0.9 if mode == "1" else 0.95)


def test_transparent_background_counts_as_white() -> None:
    ink = 255 - np.asarray(SCAN)
    rgba = np.zeros((*ink.shape, 4), np.uint8)  # black everywhere: only alpha draws the digit
    rgba[..., 3] = ink
    out = to_mnist(encode(Image.fromarray(rgba)))
    assert corr(out, REFERENCE) > 0.95


def test_transparent_palette_colour_counts_as_white() -> None:
    mask = Image.fromarray(np.where(np.asarray(SCAN) < 128, 1, 0).astype(np.uint8))
    image = Image.new("P", SCAN.size, 0)
    image.putpalette([0, 0, 0, 20, 20, 90])  # 0: black but transparent; 1: blue ink
    image.paste(1, mask=mask.point(lambda v: 255 * v))
    data = encode(image, "GIF", transparency=0)
    assert corr(to_mnist(data), REFERENCE) > 0.9


def test_exif_rotated_jpeg_is_turned_upright() -> None:
    stored = SCAN.transpose(Image.Transpose.ROTATE_90)  # a phone keeps pixels as the sensor saw
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6  # "rotate 90 degrees clockwise to display"
    upright = to_mnist(encode(stored, "JPEG", exif=exif, quality=95))
    assert corr(upright, REFERENCE) > 0.95
    assert corr(to_mnist(encode(stored, "JPEG", quality=95)), REFERENCE) < 0.5


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_pillows_exif_transpose(orientation: int) -> None:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    data = encode(page(SEVEN, size=(140, 100)), "PNG", exif=exif)
    expected = to_mnist(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))
    np.testing.assert_allclose(to_mnist(data), expected, atol=1e-5)


@pytest.mark.parametrize("at", [(4, 4), (900, 40), (40, 640), (1100, 800)])
def test_off_centre_digit_on_a_wide_page_lands_centred(at: tuple[int, int]) -> None:
    out = to_mnist(encode(page(ZERO, size=(1200, 900), at=at, scale=3), "JPEG"))
    assert np.abs(centre_of_mass(out) - 14).max() <= 1.0
    assert max(ink_box(out)) <= 20
    assert corr(out, ZERO) > 0.9


def test_small_specks_away_from_the_digit_are_ignored() -> None:
    clean = page(ONE, size=(256, 256), at=(100, 90))
    pixels = np.array(clean)
    rng = np.random.default_rng(0)
    for y, x in rng.integers(0, 60, size=(6, 2)):  # dust in the top-left corner
        pixels[y : y + 3, x : x + 2] = 40
    pixels[230:233, 240:243] = 40  # and a speck near the bottom-right
    out = to_mnist(Image.fromarray(pixels))
    np.testing.assert_allclose(out, to_mnist(clean), atol=1e-6)
    assert ink_box(out)[0] == 20
    assert corr(out, ONE) > 0.85


def test_uneven_paper_noise_and_jpeg_artefacts() -> None:
    height, width = 180, 240
    light = np.linspace(250, 140, width)[None, :] - np.linspace(0, 30, height)[:, None]
    pixels = np.asarray(page(SEVEN, size=(width, height), at=(120, 50), paper=light)).astype(float)
    noisy = pixels + np.random.default_rng(1).normal(0, 6, pixels.shape)
    data = encode(Image.fromarray(noisy.clip(0, 255).astype(np.uint8)), "JPEG", quality=60)
    assert corr(to_mnist(data), SEVEN) > 0.85


def on_scanner_bed(
    sheet: Image.Image, angle: float, bed: int, margins: tuple[int, ...]
) -> Image.Image:
    """`sheet` laid `angle` degrees askew on a flatbed scanner whose bed (the glass, or the
    lid's backing) has grey level `bed`: the scan shows it in the rotated-in corners and in
    margins (left, top, right, bottom) around the page."""
    tilted = sheet.rotate(angle, Image.Resampling.BICUBIC, expand=True, fillcolor=bed)
    left, top, right, bottom = margins
    scan = Image.new("L", (tilted.width + left + right, tilted.height + top + bottom), bed)
    scan.paste(tilted, (left, top))
    return scan


@pytest.mark.parametrize("bed", [0, 90, 255], ids=["black glass", "grey", "white lid"])
@pytest.mark.parametrize("angle", [-11.0, 9.0])
@pytest.mark.parametrize("digit", [ZERO, ONE, SEVEN], ids=["0", "1", "7"])
def test_page_scanned_askew_on_a_scanner_bed_gives_the_upright_digit(
    digit: np.ndarray, angle: float, bed: int
) -> None:
    sheet = page(digit, size=(150, 190), at=(40, 60))
    upright = to_mnist(encode(sheet))
    scan = on_scanner_bed(sheet, angle, bed, margins=(6, 3, 9, 4))
    assert corr(to_mnist(encode(scan)), upright) > 0.9


def test_page_scanned_straight_with_the_bed_along_two_sides() -> None:
    sheet = page(SEVEN, size=(150, 190), at=(40, 60))
    scan = on_scanner_bed(sheet, 0.0, 20, margins=(0, 0, 12, 8))  # page against the corner guide
    assert corr(to_mnist(encode(scan)), to_mnist(encode(sheet))) > 0.95


def test_digit_filling_its_image_is_not_taken_for_a_page_on_a_bed() -> None:
    # Cropped to its ink, a bold 0 leaves paper only in the corners, outside a curved outline.
    big = Image.new("L", (112, 112), 0)
    ImageDraw.Draw(big).ellipse([(30, 14), (82, 98)], outline=255, width=24)
    bold = np.asarray(big.resize((56, 56), Image.Resampling.BOX))
    rows, cols = np.flatnonzero(bold.any(axis=1)), np.flatnonzero(bold.any(axis=0))
    cropped = 235 - 0.8 * bold[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    on_page = to_mnist(encode(Image.fromarray((235 - 0.8 * bold).astype(np.uint8))))
    assert corr(to_mnist(encode(Image.fromarray(cropped.astype(np.uint8)))), on_page) > 0.95


def test_vignetting_is_not_taken_for_a_scanner_bed() -> None:
    # A phone photo's corners are darker than its centre, but fade into it: no step to paper.
    ys, xs = np.mgrid[-1:1:180j, -1:1:240j]
    light = 240 - 50 * (xs**2 + ys**2) / 2
    photo = page(SEVEN, size=(240, 180), at=(90, 40), paper=light)
    assert (
        corr(to_mnist(encode(photo)), to_mnist(encode(page(SEVEN, size=(240, 180), at=(90, 40)))))
        > 0.95
    )


def test_hairline_strokes_are_widened_towards_mnists() -> None:
    big = Image.new("L", (112, 112), 0)
    ImageDraw.Draw(big).line([(30, 25), (86, 25), (50, 96)], fill=255, width=3, joint="curve")
    hairline = np.asarray(big.resize((28, 28), Image.Resampling.BOX))
    assert stroke_width(hairline / 255.0) < 1.5
    out = to_mnist(encode(page(hairline)))
    assert 2.0 <= stroke_width(out) <= stroke_width(SEVEN / 255.0) + 1.0
    assert corr(out, SEVEN) > 0.85


def test_images_of_one_size_do_not_affect_each_other() -> None:
    # The paper fit's geometry is cached per image size: reuse must not change results.
    seven, zero = page(SEVEN, size=(150, 110)), page(ZERO, size=(150, 110))
    first = to_mnist(encode(seven))
    to_mnist(encode(ImageOps.invert(zero)))
    assert np.array_equal(to_mnist(encode(seven)), first)
    assert corr(first, SEVEN) > 0.9


def test_arrays_cached_per_image_size_are_read_only() -> None:
    # Every image of a size shares them: an accidental in-place edit must fail, not leak.
    for array in (frame((150, 110)), basis(0, 75, 2, 150)):
        with pytest.raises(ValueError, match="read-only"):
            array[0] = 0


def test_large_photo_is_decoded_at_reduced_size() -> None:
    photo = page(ZERO, size=(3000, 2200), at=(1200, 700), scale=24)
    assert corr(to_mnist(encode(photo, "JPEG")), ZERO) > 0.95
    assert corr(to_mnist(encode(photo.convert("RGB"), "PNG")), ZERO) > 0.95


def test_empty_bytes() -> None:
    with pytest.raises(EmptyFileError, match=r"^empty file$"):
        to_mnist(b"")


@pytest.mark.parametrize(
    "data",
    [
        np.random.default_rng(2).bytes(2000),
        b"file,label\nscan_00000.png,7\n",
        encode(SCAN, "PPM"),  # a real image, but not a supported format
    ],
    ids=["random", "text", "ppm"],
)
def test_unreadable_bytes(data: bytes) -> None:
    with pytest.raises(UnreadableImageError, match=r"^unreadable: not an image"):
        to_mnist(data)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "TIFF", "BMP"])
def test_truncated_file(fmt: str) -> None:
    data = encode(SCAN.convert("RGB") if fmt == "JPEG" else SCAN, fmt)
    with pytest.raises(TruncatedImageError, match=r"^truncated: image data ends early$"):
        to_mnist(data[: len(data) // 2])


def test_decompression_bomb_is_refused_before_decoding() -> None:
    data = png_claiming(7000, 7000)  # over MAX_PIXELS, but under Pillow's own limit
    with pytest.raises(
        ImageTooLargeError, match=r"^too large: 7000x7000 pixels \(limit 40,000,000\)$"
    ):
        to_mnist(data)
    with pytest.raises(ImageTooLargeError):
        to_mnist(Image.open(io.BytesIO(data)))  # lazily opened images are checked too


def test_pillows_own_bomb_error_is_typed() -> None:
    with pytest.raises(ImageTooLargeError, match=r"^too large: 900,000,000 pixels"):
        to_mnist(png_claiming(30000, 30000))


@pytest.mark.filterwarnings("error::PIL.Image.DecompressionBombWarning")
def test_pillows_bomb_warning_is_typed_when_warnings_are_errors() -> None:
    with pytest.raises(ImageTooLargeError):
        to_mnist(png_claiming(10000, 10000))


def blank_pages() -> dict[str, Image.Image]:
    """Pages without a digit, as scanners and cameras deliver them."""
    rng = np.random.default_rng(3)
    noisy = (232 + rng.normal(0, 8, (200, 260))).clip(0, 255).astype(np.uint8)
    dusty = np.full((200, 260), 235, np.uint8)
    for y, x in rng.integers(0, 195, size=(5, 2)):
        dusty[y : y + 2, x : x + 2] = 60
    shade = np.linspace(240, 150, 260)[None, :] + np.zeros((200, 1))
    return {
        "white": Image.new("L", (200, 260), 255),
        "noisy": Image.fromarray(noisy),
        "dusty": Image.fromarray(dusty),
        "shaded": Image.fromarray(shade.astype(np.uint8)),
        "black": Image.new("RGB", (64, 64), 0),
        "one pixel": Image.new("L", (1, 1), 0),
    }


@pytest.mark.parametrize("name", sorted(blank_pages()))
def test_blank_page(name: str) -> None:
    image = blank_pages()[name]
    for data in (encode(image, "PNG"), encode(image.convert("RGB"), "JPEG")):
        with pytest.raises(BlankImageError, match=r"^blank: no ink found$"):
            to_mnist(data)


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about some corrupt headers
@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "TIFF", "BMP", "WEBP"])
def test_corrupt_files_raise_only_typed_errors(fmt: str) -> None:
    data = encode(SCAN.convert("RGB") if fmt in {"JPEG", "WEBP"} else SCAN, fmt)
    rng = np.random.default_rng(4)
    for _ in range(25):
        corrupt = bytearray(data[: int(rng.integers(1, len(data) + 1))])
        for position in rng.integers(0, len(corrupt), size=4):
            corrupt[position] = int(rng.integers(0, 256))
        try:
            out = to_mnist(bytes(corrupt))
        except PreprocessError as error:
            assert str(error).split(":")[0] in {"unreadable", "truncated", "too large", "blank"}
        else:
            assert out.shape == (28, 28)
