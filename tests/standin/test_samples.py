"""The stand-in's sample catalog: every category covered, images deterministic, identified by their pixels."""

from __future__ import annotations

import hashlib
import io
import re
import subprocess
import sys

import pytest
from PIL import Image

from eco2.rules import MAJOR_CATEGORIES, RECYCLABLE_MIDDLE_CATEGORIES, SITUATION_TAGS
from eco2_tools.standin.samples import SAMPLES, SIZE, by_name, identify, render


def reencode(png: bytes, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    with Image.open(io.BytesIO(png)) as image:
        image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def test_the_catalog_covers_every_category_and_some_situation_tags() -> None:
    assert len(SAMPLES) >= 24
    names = [s.name for s in SAMPLES]
    assert len(set(names)) == len(names)
    assert all(re.fullmatch(r"[a-z0-9_]+", name) for name in names)
    recyclable = [s for s in SAMPLES if s.major_category == "재활용폐기물"]
    assert {s.middle_category for s in recyclable} == set(RECYCLABLE_MIDDLE_CATEGORIES)
    assert {s.major_category for s in SAMPLES} == set(MAJOR_CATEGORIES)
    assert all(s.middle_category is None for s in SAMPLES if s.major_category != "재활용폐기물")
    assert all(set(s.situation_tags) <= set(SITUATION_TAGS) for s in SAMPLES)
    tagged = {tag for s in SAMPLES for tag in s.situation_tags}
    assert {"라벨_부착", "이물질_오염", "내용물_있음", "파손"} <= tagged
    labeled = by_name("clear_pet_bottle_labeled")
    assert labeled is not None
    assert labeled.situation_tags == ("라벨_부착",)
    assert by_name("no_such_sample") is None


def test_render_is_byte_identical_and_carries_no_metadata() -> None:
    for sample in SAMPLES:
        png = render(sample)
        assert png == render(sample), sample.name
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        for chunk in (b"tIME", b"tEXt", b"iTXt", b"zTXt"):
            assert chunk not in png, (sample.name, chunk)
        with Image.open(io.BytesIO(png)) as image:
            assert image.size == (SIZE, SIZE)
    assert len({render(s) for s in SAMPLES}) == len(SAMPLES)


def test_render_is_identical_in_another_process() -> None:
    here = hashlib.sha256(b"".join(render(s) for s in SAMPLES)).hexdigest()
    code = (
        "import hashlib; from eco2_tools.standin.samples import SAMPLES, render; "
        "print(hashlib.sha256(b''.join(render(s) for s in SAMPLES)).hexdigest())"
    )
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert there.stdout.strip() == here


def test_every_sample_is_identified_by_its_pixels() -> None:
    for sample in SAMPLES:
        assert identify(render(sample)) == sample


@pytest.mark.parametrize(
    ("fmt", "options"),
    [("PNG", {"compress_level": 0}), ("PNG", {"compress_level": 9}), ("BMP", {}), ("TIFF", {})],
    ids=["png-0", "png-9", "bmp", "tiff"],
)
def test_a_lossless_reencoding_is_still_identified(fmt: str, options: dict[str, object]) -> None:
    for sample in SAMPLES:
        png = render(sample)
        other = reencode(png, fmt, **options)
        assert other != png
        assert identify(other) == sample, sample.name


def test_an_rgba_copy_is_identified_by_its_rgb_pixels() -> None:
    sample = SAMPLES[0]
    with Image.open(io.BytesIO(render(sample))) as image:
        buffer = io.BytesIO()
        image.convert("RGBA").save(buffer, format="PNG")
    assert identify(buffer.getvalue()) == sample


def test_unknown_or_broken_images_are_not_identified() -> None:
    png = render(SAMPLES[0])
    assert identify(reencode(png, "JPEG", quality=80)) is None, "lossy: the pixels change"
    with Image.open(io.BytesIO(png)) as image:
        buffer = io.BytesIO()
        image.resize((128, 128)).save(buffer, format="PNG")
    assert identify(buffer.getvalue()) is None
    blank = io.BytesIO()
    Image.new("RGB", (SIZE, SIZE), (1, 2, 3)).save(blank, format="PNG")
    assert identify(blank.getvalue()) is None
    assert identify(b"") is None
    assert identify(b"not an image at all") is None
    assert identify(png[: len(png) // 2]) is None, "a truncated PNG"
