"""LOCAL EMULATORS for one machine: an S3-compatible photo store (moto's server mode) for `eco2 up`.

Not a store to keep anything in: objects live in the emulator's memory and go when it stops. It is started by
the runner unless S3_ENDPOINT_URL names a real store (AWS S3, MinIO, ...). moto itself accepts any upload, so
a gate in front of it does what S3 does: a browser upload (POST) must carry a policy signed with the
emulator's key, not expired, whose conditions the form and the file meet (type, size range, key, bucket);
every other request (listing, reading, writing) must be signed with the emulator's key (AWS Signature V4, in
the Authorization header or as a presigned URL, not expired): the bucket is private. A signed request whose
`x-amz-content-sha256` is a digest must carry exactly that body (S3's XAmzContentSHA256Mismatch otherwise); the
other values S3 takes there (UNSIGNED-PAYLOAD, the STREAMING-… chunked forms) are passed on unverified.

    python -m eco2_tools.local.emulators --port 8095 --bucket eco2-uploads
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import hashlib
import hmac
import io
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote

from eco2.storage import MAX_UPLOAD_BYTES

if TYPE_CHECKING:
    import aiohttp

ACCESS_KEY = "eco2-local-emulator"
SECRET_KEY = "eco2-local-emulator-secret"  # noqa: S105  a local emulator's well-known key, not a secret
BUCKET = "eco2-uploads"
REGION = "us-east-1"
# Form fields a policy need not name (S3's rule); every other field must meet a condition.
_UNCHECKED = frozenset({"policy", "x-amz-signature", "file", "bucket"})
_ALGORITHM = "AWS4-HMAC-SHA256"
# S3's longest presigned URL life.
_MAX_PRESIGNED_SECONDS = 7 * 24 * 3600
# The largest signed body the emulator reads to hash (it holds it in memory): far above any photo.
_MAX_SIGNED_BODY = 64 * 1024 * 1024

_CORS = [
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Allow-Methods", "GET, HEAD, POST"),
    ("Access-Control-Allow-Headers", "*"),
    ("Access-Control-Expose-Headers", "ETag"),
]
StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class Refused(Exception):
    def __init__(self, status: str, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _denied(message: str) -> Refused:
    return Refused("403 Forbidden", "AccessDenied", message)


def _signature(secret: str, credential: str, policy: str) -> str:
    _, date, region, service, _ = (credential.split("/") + [""] * 5)[:5]
    key = ("AWS4" + secret).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, policy.encode(), hashlib.sha256).hexdigest()


def _mismatch() -> Refused:
    return Refused(
        "403 Forbidden",
        "SignatureDoesNotMatch",
        "The request signature we calculated does not match the signature you provided",
    )


@dataclass(frozen=True)
class SignedRequest:
    """What AWS Signature V4 covers of one request, as it arrived (path still percent-encoded)."""

    method: str
    raw_path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]  # lower-case names

    @classmethod
    def from_environ(cls, environ: dict[str, Any]) -> SignedRequest:
        raw = str(environ.get("RAW_URI") or environ.get("REQUEST_URI") or quote(environ.get("PATH_INFO", "")))
        headers = {
            name[5:].replace("_", "-").lower(): str(value)
            for name, value in environ.items()
            if name.startswith("HTTP_")
        }
        for name in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            if environ.get(name):
                headers[name.replace("_", "-").lower()] = str(environ[name])
        query = parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        return cls(environ["REQUEST_METHOD"], raw.split("?", 1)[0], query, headers)

    def string_to_sign(self, signed_headers: str, payload: str, amz_date: str, scope: str) -> str:
        query = sorted(
            (quote(name, safe="-_.~"), quote(value, safe="-_.~"))
            for name, value in self.query
            if name != "X-Amz-Signature"
        )
        names = signed_headers.split(";")
        canonical = "\n".join(
            [
                self.method,
                self.raw_path or "/",
                "&".join(f"{name}={value}" for name, value in query),
                "".join(f"{name}:{' '.join(self.headers.get(name, '').split())}\n" for name in names),
                signed_headers,
                payload,
            ]
        )
        digest = hashlib.sha256(canonical.encode()).hexdigest()
        return "\n".join([_ALGORITHM, amz_date, scope, digest])


def _check_signature(secret: str, access_key: str, credential: str, signature: str, to_sign: str) -> None:
    if credential.split("/", 1)[0] != access_key:
        raise Refused("403 Forbidden", "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist")
    if not hmac.compare_digest(_signature(secret, credential, to_sign), signature):
        raise _mismatch()


def check_signed(request: SignedRequest, secret: str, access_key: str) -> None:
    """S3's check of a signed request: a valid Signature V4 in the Authorization header or the query string."""
    authorization = request.headers.get("authorization", "")
    if authorization:
        algorithm, _, rest = authorization.partition(" ")
        parts = dict(item.strip().partition("=")[::2] for item in rest.split(","))
        if algorithm != _ALGORITHM or not {"Credential", "SignedHeaders", "Signature"} <= parts.keys():
            raise Refused("400 Bad Request", "AuthorizationHeaderMalformed", "The authorization header is malformed")
        credential = parts["Credential"]
        to_sign = request.string_to_sign(
            parts["SignedHeaders"],
            request.headers.get("x-amz-content-sha256", "UNSIGNED-PAYLOAD"),
            request.headers.get("x-amz-date", ""),
            credential.split("/", 1)[-1],
        )
        _check_signature(secret, access_key, credential, parts["Signature"], to_sign)
        return
    query = dict(request.query)
    if "X-Amz-Signature" not in query:
        raise _denied("Access Denied")
    try:
        signed = datetime.strptime(query["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        lifetime = int(query["X-Amz-Expires"])
        credential, signed_headers = query["X-Amz-Credential"], query["X-Amz-SignedHeaders"]
    except (KeyError, ValueError):
        raise _denied(
            "Query-string authentication requires X-Amz-Date, -Expires, -Credential, -SignedHeaders"
        ) from None
    if query.get("X-Amz-Algorithm") != _ALGORITHM or not 0 < lifetime <= _MAX_PRESIGNED_SECONDS:
        raise _denied("X-Amz-Algorithm must be AWS4-HMAC-SHA256 and X-Amz-Expires at most 7 days")
    to_sign = request.string_to_sign(
        signed_headers, "UNSIGNED-PAYLOAD", query["X-Amz-Date"], credential.split("/", 1)[-1]
    )
    _check_signature(secret, access_key, credential, query["X-Amz-Signature"], to_sign)
    if signed.timestamp() + lifetime < time.time():
        raise _denied("Request has expired")


def checked_body(environ: dict[str, Any], declared: str) -> dict[str, Any]:
    """The environ with its body read and re-wrapped, once the body's SHA-256 is the signed `declared` digest
    (a lower-case hex digest; any other value S3 takes in x-amz-content-sha256 is left to the backend)."""
    if len(declared) != 64 or any(c not in "0123456789abcdef" for c in declared):
        return environ
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length > _MAX_SIGNED_BODY:
        raise Refused("400 Bad Request", "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size")
    body = environ["wsgi.input"].read(length) if length else b""
    if not hmac.compare_digest(hashlib.sha256(body).hexdigest(), declared):
        raise Refused(
            "400 Bad Request",
            "XAmzContentSHA256Mismatch",
            "The provided 'x-amz-content-sha256' header does not match what was computed.",
        )
    return {**environ, "wsgi.input": io.BytesIO(body)}


def _condition(condition: Any, form: dict[str, str], size: int) -> None:
    """Raise Refused when one policy condition is not met (the forms S3 documents for browser uploads)."""
    if isinstance(condition, dict):
        ((name, expected),) = condition.items()
        condition = ["eq", f"${name}", expected]
    op, *args = condition
    if op == "content-length-range":
        low, high = int(args[0]), int(args[1])
        if size > high:
            raise Refused("400 Bad Request", "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size")
        if size < low:
            raise Refused("400 Bad Request", "EntityTooSmall", "Your proposed upload is smaller than the minimum")
        return
    name, expected = str(args[0]).removeprefix("$").lower(), str(args[1])
    value = form.get(name, "")
    met = value == expected if op == "eq" else value.startswith(expected) if op == "starts-with" else False
    if not met:
        raise _denied(f"Invalid according to Policy: Policy Condition failed: [{op}, ${name}, {expected}]")


def check_post(form: dict[str, str], size: int, secret: str) -> None:
    """S3's checks of a browser-based upload: signature, expiry, every condition, every field covered."""
    policy = form.get("policy", "")
    if not policy or _signature(secret, form.get("x-amz-credential", ""), policy) != form.get("x-amz-signature"):
        raise _denied("The request signature we calculated does not match the signature you provided")
    try:
        document = json.loads(base64.b64decode(policy))
        expires = datetime.fromisoformat(str(document["expiration"]).replace("Z", "+00:00"))
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise Refused("400 Bad Request", "InvalidPolicyDocument", "Invalid Policy: malformed") from None
    if expires < datetime.now(UTC):
        raise _denied("Invalid according to Policy: Policy expired.")
    covered = set(_UNCHECKED)
    for condition in document.get("conditions", []):
        _condition(condition, form, size)
        if isinstance(condition, dict):
            covered |= {name.lower() for name in condition}
        elif condition[0] != "content-length-range":
            covered.add(str(condition[1]).removeprefix("$").lower())
    extra = sorted(name for name in form if name not in covered and not name.startswith("x-ignore-"))
    if extra:
        raise _denied(f"Invalid according to Policy: Extra input fields: {extra[0]}")


def _form(environ: dict[str, Any], body: bytes) -> tuple[dict[str, str], int]:
    from werkzeug.formparser import parse_form_data

    parsing = {**environ, "wsgi.input": io.BytesIO(body)}
    _, fields, files = parse_form_data(parsing)
    upload = files.get("file")
    size = len(upload.read()) if upload is not None else 0
    return {name.lower(): value for name, value in fields.items()}, size


@dataclass
class PolicyGate:
    """WSGI middleware in front of moto's S3: refuses what S3 itself would refuse (see the module doc)."""

    app: WsgiApp
    secret: str = SECRET_KEY
    access_key: str = ACCESS_KEY
    # Set once the bucket exists: /healthz answers 503 until then.
    ready: threading.Event = field(default_factory=threading.Event)

    def __call__(self, environ: dict[str, Any], respond: StartResponse) -> Iterable[bytes]:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")

        def start_response(status: str, headers: list[tuple[str, str]], *rest: Any) -> Any:
            # The bucket's CORS rule, as one would set it on S3 for a web app uploading from the browser
            # (moto's own answers carry one already: a second Allow-Origin would make the browser refuse).
            named = {name.lower() for name, _ in headers}
            return respond(status, [*headers, *(h for h in _CORS if h[0].lower() not in named)], *rest)

        if path == "/healthz":
            status = "200 OK" if self.ready.is_set() else "503 Service Unavailable"
            start_response(status, [("Content-Type", "text/plain"), ("Content-Length", "2")])
            return [b"ok" if self.ready.is_set() else b"no"]
        try:
            if method == "OPTIONS":
                pass  # a CORS preflight: S3 answers it unsigned
            elif self._browser_upload(environ):
                environ = self._checked_post(environ)
            else:
                signed = SignedRequest.from_environ(environ)
                check_signed(signed, self.secret, self.access_key)
                environ = checked_body(environ, signed.headers.get("x-amz-content-sha256", ""))
        except Refused as refused:
            body = f"<Error><Code>{refused.code}</Code><Message>{refused.message}</Message></Error>".encode()
            start_response(refused.status, [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))])
            return [body]
        return self.app(environ, start_response)

    @staticmethod
    def _browser_upload(environ: dict[str, Any]) -> bool:
        """A POST of a form to the bucket itself, unsigned in its headers: the policy is its signature."""
        path = environ.get("PATH_INFO", "")
        return (
            environ["REQUEST_METHOD"] == "POST"
            and path.strip("/").count("/") == 0
            and "HTTP_AUTHORIZATION" not in environ
            and "delete" not in environ.get("QUERY_STRING", "")
        )

    def _checked_post(self, environ: dict[str, Any]) -> dict[str, Any]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        if length > MAX_UPLOAD_BYTES + 64 * 1024:
            raise Refused("400 Bad Request", "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size")
        body = environ["wsgi.input"].read(length)
        form, size = _form(environ, body)
        form["bucket"] = environ.get("PATH_INFO", "").strip("/")
        check_post(form, size, self.secret)
        return {**environ, "wsgi.input": io.BytesIO(body)}


def serve_s3(host: str, port: int, bucket: str) -> None:
    """Run the emulator until killed, with `bucket` created (private) at start."""
    import boto3
    from moto.moto_server.werkzeug_app import create_backend_app
    from werkzeug.serving import make_server

    app = PolicyGate(create_backend_app("s3"))
    server = make_server(host, port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    client = boto3.client(
        "s3",
        endpoint_url=f"http://{host}:{port}",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name=REGION,
    )
    client.create_bucket(Bucket=bucket)
    app.ready.set()
    print(
        f"LOCAL S3 EMULATOR (moto) on http://{host}:{port}, bucket {bucket}: in memory, gone when it stops", flush=True
    )
    thread.join()


def emulator_env(url: str, bucket: str = BUCKET) -> dict[str, str]:
    """What the functions need to use the emulator as their photo store."""
    return {
        "S3_ENDPOINT_URL": url,
        "ECO2_S3_BUCKET": bucket,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_REGION": REGION,
    }


async def start_s3_emulator(
    host: str,
    port: int,
    *,
    http: aiohttp.ClientSession,
    cwd: Path,
    log_path: Path,
    preexec_fn: Callable[[], None] | None = None,
) -> tuple[asyncio.subprocess.Process, str]:
    """Start the emulator as a child process and wait until it answers; (process, url)."""
    url = f"http://{host}:{port}"
    with log_path.open("ab") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "eco2_tools.local.emulators",
            "--host",
            host,
            "--port",
            str(port),
            cwd=cwd,
            stdout=log_file,
            stderr=log_file,
            env=dict(os.environ),
            preexec_fn=preexec_fn,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.returncode is not None:
            raise RuntimeError(f"the S3 emulator exited ({process.returncode}); see {log_path}")
        if await _answers(http, f"{url}/healthz"):
            return process, url
        await asyncio.sleep(0.1)
    process.terminate()
    raise RuntimeError(f"the S3 emulator did not answer within 30 s; see {log_path}")


async def _answers(http: aiohttp.ClientSession, url: str) -> bool:
    # Imported here, in the runner that starts the emulator (which has it loaded already): the emulator's own
    # process runs no HTTP client and does not pay for one.
    import aiohttp

    from eco2_tools.local.client import phase_timeout, request_status

    try:
        status = await request_status(http, "GET", url, timeout=phase_timeout(1.0))
    except (aiohttp.ClientError, TimeoutError):
        return False
    return status == 200


def main() -> None:
    parser = argparse.ArgumentParser(description="LOCAL S3 EMULATOR (moto server mode) for eco2 up")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8095)
    parser.add_argument("--bucket", default=BUCKET)
    args = parser.parse_args()
    serve_s3(args.host, args.port, args.bucket)


if __name__ == "__main__":
    main()
