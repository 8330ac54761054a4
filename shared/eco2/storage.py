"""Photo storage on any S3-compatible store (AWS S3, MinIO, the local emulator): presigned uploads and reads.

The app asks the gateway for an upload (`POST /api/v1/images`): it gets a presigned POST whose policy makes the
STORE refuse another content type, a larger body or another key, and the URL to send as `image_url`. Keys live
under the user's own prefix, so a scan of someone else's upload is refused (`owned_url`, which also reduces
every spelling of a store URL to the one canonical form that is checked and passed on). The bucket is
private: `vision` hands the model a presigned GET (`readable_url`), so no photo ever needs a public URL.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, quote, unquote, urlsplit

from eco2.errors import BadRequest, Eco2Error

# What the app may upload, and the file extension each key gets.
CONTENT_TYPES: dict[str, str] = {
    "image/jpeg": "jpg",
    "image/png": "png",
    "image/webp": "webp",
    "image/heic": "heic",
}
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
KEY_ROOT = "uploads"
# The only keys `presign_upload` makes: a store URL naming anything else is no upload of anyone's.
_KEY = re.compile(rf"{KEY_ROOT}/[0-9a-f]{{32}}/[0-9a-f]{{32}}\.({'|'.join(CONTENT_TYPES.values())})")
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class StorageSettings:
    """S3_ENDPOINT_URL (empty: AWS itself), ECO2_S3_BUCKET, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_REGION."""

    bucket: str
    endpoint_url: str | None = None
    access_key: str | None = None
    secret_key: str | None = None
    region: str = "us-east-1"
    upload_seconds: int = 300
    read_seconds: int = 600

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> StorageSettings | None:
        """None when no store is configured (neither S3_ENDPOINT_URL nor ECO2_S3_BUCKET)."""
        endpoint = (env.get("S3_ENDPOINT_URL") or "").strip().rstrip("/") or None
        bucket = (env.get("ECO2_S3_BUCKET") or "").strip()
        if endpoint is None and not bucket:
            return None
        return cls(
            bucket=bucket or "eco2-uploads",
            endpoint_url=endpoint,
            access_key=env.get("AWS_ACCESS_KEY_ID") or None,
            secret_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
            region=(env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or cls.region).strip(),
        )

    @property
    def base_url(self) -> str:
        """Where the bucket's objects are addressed (path style): `<base_url>/<key>`."""
        endpoint = self.endpoint_url or f"https://s3.{self.region}.amazonaws.com"
        return f"{endpoint}/{self.bucket}"


def user_prefix(user_id: str) -> str:
    """The key prefix of one user's uploads (a digest: user ids may hold characters keys should not)."""
    return f"{KEY_ROOT}/{hashlib.sha256(user_id.encode()).hexdigest()[:32]}/"


def origin(parts: SplitResult) -> str | None:
    """`scheme://host:port`, lower-cased with the default port spelled out; None when not an http(s) URL."""
    try:
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    return f"{scheme}://{parts.hostname.lower()}:{port or _DEFAULT_PORTS[scheme]}"


def path_segments(path: str) -> list[str] | None:
    """The path's segments percent-decoded, empty and dot segments resolved; None when one hides a slash."""
    segments: list[str] = []
    for raw in path.split("/"):
        segment = unquote(raw)
        if "/" in segment or "\\" in segment:
            return None
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments:
                segments.pop()
            continue
        segments.append(segment)
    return segments


def not_canonical(base_url: str) -> BadRequest:
    return BadRequest(
        "image_url_not_canonical",
        f"a photo store URL must be exactly {base_url}/<key> as POST /api/v1/images gave it (no query or fragment)",
    )


def upload_problem(content_type: str, size: int) -> BadRequest | None:
    if content_type not in CONTENT_TYPES:
        allowed = ", ".join(CONTENT_TYPES)
        return BadRequest("unsupported_image_type", f"content_type must be one of {allowed}")
    if not 0 < size <= MAX_UPLOAD_BYTES:
        return BadRequest("image_too_large", f"size must be between 1 and {MAX_UPLOAD_BYTES} bytes")
    return None


class Storage:
    """One per process; boto3 (imported here, on first use) signs locally, so no call reaches the store."""

    def __init__(self, settings: StorageSettings) -> None:
        import boto3
        from botocore.config import Config

        from eco2.connections import ConnectionSettings

        limits = ConnectionSettings.from_env()
        self.settings = settings
        self._client: Any = boto3.client(
            "s3",
            endpoint_url=settings.endpoint_url,
            aws_access_key_id=settings.access_key,
            aws_secret_access_key=settings.secret_key,
            region_name=settings.region,
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                connect_timeout=limits.http_connect_timeout_seconds,
                read_timeout=limits.http_timeout_seconds,
                retries={"total_max_attempts": 3, "mode": "standard"},
            ),
        )

    def key_of(self, url: str) -> str | None:
        """The object key of a URL into this store's bucket, or None for any other URL."""
        base = self.settings.base_url + "/"
        if not url.startswith(base) or urlsplit(url).query:
            return None
        return unquote(url[len(base) :])

    def canonical_url(self, url: str) -> str | None:
        """The exact `base_url/<key>` that `url` names when it is on this store's origin, None when it is not.

        Scheme, host, port and path are normalised (case, default port, dot segments, repeated slashes,
        percent-encoding), so ownership is checked on, and the model handed, one spelling only. A URL on the
        store's origin that is not exactly an upload's (a query, a fragment, another path) is a 400.
        """
        try:
            parts = urlsplit(url.strip())
        except ValueError:
            return None
        base = urlsplit(self.settings.base_url)
        if origin(parts) is None or origin(parts) != origin(base):
            return None
        segments = path_segments(parts.path)
        bucket = path_segments(base.path) or []
        if parts.query or parts.fragment or "#" in url or segments is None or segments[: len(bucket)] != bucket:
            raise not_canonical(self.settings.base_url)
        key = "/".join(segments[len(bucket) :])
        if not _KEY.fullmatch(key):
            raise not_canonical(self.settings.base_url)
        return self.object_url(key)

    def owned_url(self, url: str, user_id: str) -> str:
        """The canonical URL of one of the user's uploads, or `url` as it is when not on this store's origin.

        A 403 for an upload of someone else, a 400 for a store URL that is not exactly an upload's.
        """
        canonical = self.canonical_url(url)
        if canonical is None:
            return url
        key = canonical[len(self.settings.base_url) + 1 :]
        if not key.startswith(user_prefix(user_id)):
            raise Eco2Error("image_not_yours", "image_url names an upload of another user", status=403)
        return canonical

    def object_url(self, key: str) -> str:
        return f"{self.settings.base_url}/{quote(key)}"

    def presign_upload(self, user_id: str, content_type: str, size: int) -> dict[str, Any]:
        """A presigned POST for one new object under the user's prefix; the store enforces type and size."""
        problem = upload_problem(content_type, size)
        if problem is not None:
            raise problem
        key = f"{user_prefix(user_id)}{uuid.uuid4().hex}.{CONTENT_TYPES[content_type]}"
        post = self._client.generate_presigned_post(
            Bucket=self.settings.bucket,
            Key=key,
            Fields={"Content-Type": content_type},
            Conditions=[{"Content-Type": content_type}, ["content-length-range", 1, size]],
            ExpiresIn=self.settings.upload_seconds,
        )
        return {
            "upload": {"method": "POST", "url": post["url"], "fields": post["fields"]},
            "image_url": self.object_url(key),
            "key": key,
            "expires_in": self.settings.upload_seconds,
        }

    def readable_url(self, url: str) -> str:
        """A presigned GET for an object of this store (the bucket is private); any other URL as it is."""
        key = self.key_of(url)
        if key is None:
            return url
        return str(
            self._client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.settings.bucket, "Key": key},
                ExpiresIn=self.settings.read_seconds,
            )
        )
