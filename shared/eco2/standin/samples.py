"""The stand-in's catalog of sample waste images: drawn with Pillow, identified again by their pixels."""

from __future__ import annotations

import functools
import hashlib
import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

SIZE = 256
RECYCLABLE = "재활용폐기물"

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


def _recyclable(name: str, middle: str, minor: str, *tags: str) -> Sample:
    return Sample(name, RECYCLABLE, middle, minor, tags)


def _other(name: str, major: str, minor: str | None, *tags: str) -> Sample:
    return Sample(name, major, None, minor, tags)


SAMPLES: tuple[Sample, ...] = (
    _recyclable("newspaper_bundle", "종이", "신문지"),
    _recyclable("cardboard_box_taped", "종이", "택배 상자", "테이프_부착"),
    _recyclable("milk_carton", "종이팩", "우유팩"),
    _recyclable("clear_pet_bottle", "무색페트병", "생수병"),
    _recyclable("clear_pet_bottle_labeled", "무색페트병", "생수병", "라벨_부착"),
    _recyclable("plastic_container", "플라스틱류", "플라스틱 용기"),
    _recyclable("plastic_container_soiled", "플라스틱류", "배달 음식 용기", "이물질_오염"),
    _recyclable("snack_wrapper", "비닐류", "과자 봉지"),
    _recyclable("eps_box", "발포합성수지", "스티로폼 상자"),
    _recyclable("glass_bottle", "유리병", "음료 유리병"),
    _recyclable("glass_bottle_capped", "유리병", "음료 유리병", "뚜껑_있음"),
    _recyclable("aluminum_can", "금속류", "음료 캔"),
    _recyclable("aluminum_can_with_contents", "금속류", "음료 캔", "내용물_있음"),
    _recyclable("cotton_tshirt", "의류및원단", "티셔츠"),
    _recyclable("aa_battery", "전지", "건전지"),
    _recyclable("fluorescent_lamp", "조명제품", "형광등"),
    _recyclable("fluorescent_lamp_broken", "조명제품", "형광등", "파손"),
    _recyclable("hair_dryer", "전기전자제품", "헤어드라이어"),
    _other("receipt", "일반종량제폐기물", "영수증"),
    _other("ceramic_bowl_broken", "불연성종량제폐기물", "도자기 그릇", "파손"),
    _other("fruit_peel", "음식물류폐기물", "과일 껍질"),
    _other("wooden_chair", "대형폐기물", "나무 의자"),
    _other("tile_debris", "공사장생활폐기물", "타일 조각"),
    _other("expired_medicine", "생활계유해폐기물", "폐의약품"),
    _other("blurry_photo", "미분류", None),
)

# How each sample is drawn; kept apart from Sample so the labels stay the whole public record.
_LOOKS: dict[str, _Look] = {
    "newspaper_bundle": _Look("stack", (225, 225, 215), (90, 110, 140)),
    "cardboard_box_taped": _Look("box", (190, 140, 80), (235, 235, 240)),
    "milk_carton": _Look("carton", (250, 250, 250), (120, 170, 220)),
    "clear_pet_bottle": _Look("bottle", (200, 230, 245), (40, 60, 90)),
    "clear_pet_bottle_labeled": _Look("bottle", (200, 230, 245), (40, 60, 90)),
    "plastic_container": _Look("tub", (240, 240, 230), (70, 130, 90)),
    "plastic_container_soiled": _Look("tub", (240, 240, 230), (70, 130, 90)),
    "snack_wrapper": _Look("pouch", (230, 60, 50), (250, 220, 120)),
    "eps_box": _Look("box", (252, 252, 252), (60, 60, 70)),
    "glass_bottle": _Look("bottle", (60, 150, 70), (230, 220, 200)),
    "glass_bottle_capped": _Look("bottle", (60, 150, 70), (230, 220, 200)),
    "aluminum_can": _Look("can", (180, 185, 195), (180, 40, 60)),
    "aluminum_can_with_contents": _Look("can", (180, 185, 195), (180, 40, 60)),
    "cotton_tshirt": _Look("shirt", (50, 90, 200), (240, 230, 210)),
    "aa_battery": _Look("battery", (30, 30, 30), (250, 200, 60)),
    "fluorescent_lamp": _Look("tube", (250, 250, 235), (30, 40, 60)),
    "fluorescent_lamp_broken": _Look("tube", (250, 250, 235), (30, 40, 60)),
    "hair_dryer": _Look("dryer", (220, 80, 150), (210, 235, 235)),
    "receipt": _Look("slip", (255, 255, 250), (150, 150, 160)),
    "ceramic_bowl_broken": _Look("bowl", (235, 225, 200), (60, 90, 110)),
    "fruit_peel": _Look("peel", (250, 200, 40), (110, 70, 40)),
    "wooden_chair": _Look("chair", (140, 90, 50), (200, 220, 200)),
    "tile_debris": _Look("shards", (180, 120, 100), (120, 120, 120)),
    "expired_medicine": _Look("pills", (240, 240, 240), (200, 60, 60)),
    "blurry_photo": _Look("blur", (128, 128, 128), (140, 130, 120)),
}

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
