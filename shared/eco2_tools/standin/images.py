"""Turns the image URL of a classification request into image bytes: data URL, own sample, or a fetch."""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
from urllib.parse import unquote_to_bytes, urlsplit

import httpx

from eco2_tools.standin import samples

FETCH_TIMEOUT_SECONDS = 5.0
MAX_IMAGE_BYTES = 5 * 1024 * 1024
SAMPLES_PATH = "/samples/"


class ImageUnavailable(Exception):
    """The URL names no image the stand-in can read; the message is safe to return to the caller."""


@functools.cache
def sample_png(sample: samples.Sample) -> bytes:
    return samples.render(sample)


def _decode_data_url(url: str) -> bytes:
    header, comma, payload = url[len("data:") :].partition(",")
    if not comma:
        raise ImageUnavailable("the data URL has no payload")
    if header.endswith(";base64"):
        try:
            data = base64.b64decode("".join(payload.split()), validate=True)
        except (binascii.Error, ValueError):
            raise ImageUnavailable("the data URL is not valid base64") from None
    else:
        data = unquote_to_bytes(payload)
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageUnavailable("the image is larger than 5 MiB")
    return data


async def _fetch(url: str, http: httpx.AsyncClient) -> bytes:
    try:
        # One deadline for the whole fetch: httpx's timeouts are per read, so a trickle could go on forever.
        async with asyncio.timeout(FETCH_TIMEOUT_SECONDS), http.stream("GET", url) as response:
            if response.status_code != 200:
                raise ImageUnavailable(f"fetching the image URL returned HTTP {response.status_code}")
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > MAX_IMAGE_BYTES:
                raise ImageUnavailable("the image is larger than 5 MiB")
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > MAX_IMAGE_BYTES:
                    raise ImageUnavailable("the image is larger than 5 MiB")
                chunks.append(chunk)
    except TimeoutError:
        raise ImageUnavailable("fetching the image URL timed out") from None
    except (httpx.HTTPError, httpx.InvalidURL):
        raise ImageUnavailable("the image URL could not be fetched") from None
    return b"".join(chunks)


async def load_image(url: str, *, http: httpx.AsyncClient, own_netloc: str) -> bytes:
    """The bytes behind `url`. `own_netloc` is this server's host as the caller addressed it."""
    if url.startswith("data:"):
        return _decode_data_url(url)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ImageUnavailable("the image URL must be a data, http or https URL")
    if parts.netloc.lower() == own_netloc.lower() and parts.path.startswith(SAMPLES_PATH):
        # One of our own samples: no need to call ourselves over the network.
        name = parts.path[len(SAMPLES_PATH) :].removesuffix(".png")
        sample = samples.by_name(name)
        if sample is None:
            raise ImageUnavailable("no such sample image")
        return sample_png(sample)
    return await _fetch(url, http)
