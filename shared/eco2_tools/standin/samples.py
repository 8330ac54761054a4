"""The stand-in's catalog of sample waste images: drawn with Pillow, identified again by their pixels."""

from __future__ import annotations

import functools
import hashlib
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

SIZE = 256

Colour = tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class Sample:
    """One sample image and the labels a perfect classifier would give it."""

    name: str
    major_category: str
    middle_category: str | None
    minor_category: str | None
    situation_tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _Look:
    shape: str
    fill: Colour
    background: Colour


def _colour(rgb: list[int]) -> Colour:
    red, green, blue = rgb
    return red, green, blue


def _load() -> tuple[tuple[Sample, ...], dict[str, _Look]]:
    """samples.json: one row per sample, its labels and how it is drawn."""
    rows = json.loads((Path(__file__).parent / "samples.json").read_text(encoding="utf-8"))
    samples = tuple(Sample(r["name"], r["major"], r["middle"], r["minor"], tuple(r["tags"])) for r in rows)
    # How each sample is drawn; kept apart from Sample so the labels stay the whole public record.
    looks = {r["name"]: _Look(r["shape"], _colour(r["fill"]), _colour(r["background"])) for r in rows}
    return samples, looks


SAMPLES, _LOOKS = _load()

_BY_NAME: dict[str, Sample] = {sample.name: sample for sample in SAMPLES}


def by_name(name: str) -> Sample | None:
    return _BY_NAME.get(name)


def _draw_shape(draw: ImageDraw.ImageDraw, look: _Look) -> None:
    fill, outline = look.fill, (20, 20, 20)
    shape = look.shape
    if shape == "bottle":
        draw.rectangle((112, 40, 144, 70), fill=fill, outline=outline, width=2)
        draw.rounded_rectangle((88, 66, 168, 210), radius=24, fill=fill, outline=outline, width=3)
    elif shape == "can":
        draw.rectangle((88, 60, 168, 200), fill=fill, outline=outline, width=3)
        draw.ellipse((88, 48, 168, 72), fill=fill, outline=outline, width=3)
    elif shape in ("box", "carton"):
        draw.rectangle((56, 80, 200, 200), fill=fill, outline=outline, width=3)
        if shape == "carton":
            draw.polygon([(56, 80), (128, 40), (200, 80)], fill=fill, outline=outline)
    elif shape == "stack":
        for i in range(5):
            draw.rectangle((48, 80 + 22 * i, 208, 98 + 22 * i), fill=fill, outline=outline, width=2)
    elif shape == "tub":
        draw.polygon([(60, 90), (196, 90), (180, 200), (76, 200)], fill=fill, outline=outline)
    elif shape == "pouch":
        draw.polygon([(70, 60), (186, 60), (196, 200), (60, 200)], fill=fill, outline=outline)
    elif shape == "shirt":
        draw.polygon(
            [(80, 50), (176, 50), (220, 100), (190, 120), (180, 210), (76, 210), (66, 120), (36, 100)],
            fill=fill,
            outline=outline,
        )
    elif shape == "battery":
        draw.rectangle((78, 100, 190, 150), fill=fill, outline=outline, width=3)
        draw.rectangle((190, 115, 202, 135), fill=(200, 200, 200), outline=outline)
    elif shape == "tube":
        draw.rounded_rectangle((24, 110, 232, 140), radius=14, fill=fill, outline=outline, width=3)
    elif shape == "dryer":
        draw.ellipse((60, 60, 160, 140), fill=fill, outline=outline, width=3)
        draw.rectangle((160, 85, 215, 115), fill=fill, outline=outline, width=3)
        draw.rectangle((95, 140, 125, 210), fill=fill, outline=outline, width=3)
    elif shape == "slip":
        draw.rectangle((90, 36, 166, 214), fill=fill, outline=outline, width=2)
        for y in range(56, 200, 14):
            draw.line((100, y, 156, y), fill=(120, 120, 120), width=2)
    elif shape == "bowl":
        draw.chord((50, 60, 206, 200), start=0, end=180, fill=fill, outline=outline, width=3)
    elif shape == "peel":
        draw.arc((50, 50, 206, 206), start=200, end=340, fill=fill, width=24)
    elif shape == "chair":
        draw.rectangle((80, 40, 96, 210), fill=fill)
        draw.rectangle((80, 120, 180, 136), fill=fill)
        draw.rectangle((164, 120, 180, 210), fill=fill)
    elif shape == "shards":
        for x, y in ((60, 70), (130, 60), (90, 140), (160, 130)):
            draw.polygon([(x, y), (x + 40, y + 10), (x + 20, y + 45)], fill=fill, outline=outline)
    elif shape == "pills":
        for x, y in ((70, 80), (130, 80), (70, 140), (130, 140)):
            draw.ellipse((x, y, x + 50, y + 30), fill=fill, outline=outline, width=2)
    elif shape == "blur":
        for i in range(8):
            shade = 110 + 8 * i
            draw.ellipse((40 + 6 * i, 40 + 6 * i, 216 - 6 * i, 216 - 6 * i), fill=(shade, shade, shade))


def _draw_tags(draw: ImageDraw.ImageDraw, tags: tuple[str, ...]) -> None:
    """Each situation tag leaves a visible mark, so a tagged sample differs from its clean twin."""
    for tag in tags:
        if tag == "라벨_부착":
            draw.rectangle((88, 110, 168, 150), fill=(30, 120, 220), outline=(10, 10, 10))
        elif tag == "이물질_오염":
            for x, y in ((90, 120), (120, 150), (150, 110), (110, 100), (140, 170)):
                draw.ellipse((x, y, x + 16, y + 12), fill=(110, 60, 20))
        elif tag == "내용물_있음":
            draw.rectangle((91, 130, 165, 197), fill=(150, 90, 30))
        elif tag == "뚜껑_있음":
            draw.rectangle((108, 30, 148, 46), fill=(200, 170, 30), outline=(10, 10, 10))
        elif tag == "테이프_부착":
            draw.rectangle((56, 130, 200, 146), fill=(230, 200, 120), outline=(120, 90, 40))
        elif tag == "파손":
            draw.line([(100, 60), (120, 120), (105, 150), (130, 200)], fill=(200, 0, 0), width=4)


def _draw(sample: Sample) -> Image.Image:
    look = _LOOKS[sample.name]
    image = Image.new("RGB", (SIZE, SIZE), look.background)
    draw = ImageDraw.Draw(image)
    _draw_shape(draw, look)
    _draw_tags(draw, sample.situation_tags)
    # The ASCII name in the default font: a human can tell the samples apart, and every sample differs.
    font = ImageFont.load_default()
    draw.rectangle((0, 226, SIZE, SIZE), fill=(255, 255, 255))
    draw.text((6, 232), sample.name, fill=(0, 0, 0), font=font)
    return image


def render(sample: Sample) -> bytes:
    """The sample as a PNG; byte-identical on every call (no timestamps or other metadata are written)."""
    buffer = io.BytesIO()
    _draw(sample).save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def _pixel_digest(image: Image.Image) -> str:
    return hashlib.sha256(image.convert("RGB").tobytes()).hexdigest()


@functools.cache
def _index() -> dict[str, Sample]:
    return {_pixel_digest(_draw(sample)): sample for sample in SAMPLES}


def identify(image_bytes: bytes) -> Sample | None:
    """The sample whose decoded RGB pixels these are (any lossless encoding), or None."""
    try:
        with warnings.catch_warnings():
            # A decompression bomb is just an unknown image here, not a warning that fails a test run.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(image_bytes)) as image:
                if image.size != (SIZE, SIZE):
                    return None
                digest = _pixel_digest(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        return None
    return _index().get(digest)
