"""The local S3 emulator refuses what S3 refuses: unsigned or wrongly signed requests, listing without credentials."""

from __future__ import annotations

from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from eco2_tools.local.emulators import ACCESS_KEY, SECRET_KEY

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64


def s3(emulator: dict[str, str], secret: str = SECRET_KEY) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=emulator["S3_ENDPOINT_URL"],
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=secret,
        region_name=emulator["AWS_REGION"],
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}),
    )


@pytest.fixture(scope="module")
def stored(emulator: dict[str, str]) -> str:
    """One object put with the emulator's credentials; its key."""
    key = "uploads/emulator-test/photo.png"
    s3(emulator).put_object(Bucket=emulator["ECO2_S3_BUCKET"], Key=key, Body=PNG, ContentType="image/png")
    return key


@pytest.mark.parametrize("headers", [{}, {"Authorization": "local"}, {"Authorization": "AWS4-HMAC-SHA256 x"}])
def test_listing_the_bucket_needs_valid_credentials(emulator: dict[str, str], headers: dict[str, str]) -> None:
    response = httpx.get(f"{emulator['S3_ENDPOINT_URL']}/{emulator['ECO2_S3_BUCKET']}?list-type=2", headers=headers)
    assert response.status_code in (400, 403)  # 400 AuthorizationHeaderMalformed, as S3 answers a bad header
    assert "<Code>" in response.text
    assert "<Contents>" not in response.text


def test_a_client_with_the_right_key_lists_and_one_with_a_wrong_key_is_refused(
    emulator: dict[str, str], stored: str
) -> None:
    listed = s3(emulator).list_objects_v2(Bucket=emulator["ECO2_S3_BUCKET"])
    assert stored in [item["Key"] for item in listed["Contents"]]
    with pytest.raises(ClientError) as refused:
        s3(emulator, secret="not-the-emulator-secret").list_objects_v2(Bucket=emulator["ECO2_S3_BUCKET"])
    assert refused.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    with pytest.raises(ClientError):
        s3(emulator, secret="not-the-emulator-secret").put_object(
            Bucket=emulator["ECO2_S3_BUCKET"], Key="uploads/x/forged.png", Body=PNG
        )


def test_a_presigned_read_is_checked_against_its_signature(emulator: dict[str, str], stored: str) -> None:
    url = s3(emulator).generate_presigned_url(
        "get_object", Params={"Bucket": emulator["ECO2_S3_BUCKET"], "Key": stored}, ExpiresIn=60
    )
    assert httpx.get(url).content == PNG
    forged = url.replace("X-Amz-Signature=", "X-Amz-Signature=0")[:-1]
    assert httpx.get(forged).status_code == 403
    other = url.replace("photo.png", "other.png")  # a signature for one key does not read another
    assert httpx.get(other).status_code == 403
    longer = url.replace("X-Amz-Expires=60", "X-Amz-Expires=604800")  # nor may its lifetime be stretched
    assert httpx.get(longer).status_code == 403
    wrong_key = s3(emulator, secret="not-the-emulator-secret").generate_presigned_url(
        "get_object", Params={"Bucket": emulator["ECO2_S3_BUCKET"], "Key": stored}, ExpiresIn=60
    )
    assert httpx.get(wrong_key).status_code == 403


def test_a_body_other_than_the_one_signed_is_refused_and_not_stored(emulator: dict[str, str]) -> None:
    client = s3(emulator)
    sent: list[str] = []

    def tamper(request: Any, **_: Any) -> None:
        # After signing, as a proxy on the way would: the same length, other bytes.
        sent.append(request.headers.get("x-amz-content-sha256", b"").decode())
        request.body = PNG[:-4] + b"evil"

    client.meta.events.register("before-send.s3.PutObject", tamper)
    key = "uploads/emulator-test/tampered.png"
    with pytest.raises(ClientError) as refused:
        client.put_object(Bucket=emulator["ECO2_S3_BUCKET"], Key=key, Body=PNG, ContentType="image/png")
    assert refused.value.response["Error"]["Code"] == "XAmzContentSHA256Mismatch"
    assert len(sent[0]) == 64, sent  # a digest of the body was signed: what the emulator checks
    with pytest.raises(ClientError) as missing:
        s3(emulator).head_object(Bucket=emulator["ECO2_S3_BUCKET"], Key=key)
    assert missing.value.response["Error"]["Code"] == "404"
