"""Reads of S3 buckets through harvester's own HTTP session: anonymous, or signed for a private mirror.

The archives publish their bulk data on public buckets (``../shared/docs/upstream-apis.md`` §4):
MAST's TESS files in ``stpubdata``, IRSA's ZTF light curves as HATS Parquet in ``ipac-irsa-ztf``.
A public bucket answers plain unsigned HTTPS, so harvester reads it with the same
:class:`~harvester.io.http.HttpSession` as every archive (per-host budget, retries, timeouts, size
caps, the offline fake, respx in tests) and with no token (:meth:`HttpSession.anonymous`), not
with an S3 library that would bypass all of that.

- :class:`CloudRoute`: one bucket at one endpoint, and a key's URL.
- :class:`AwsSigner`: AWS Signature Version 4 for ``credentials: aws`` (botocore signs, from the
  standard credential chain); attached with :meth:`HttpSession.signed`, so the signature goes to
  the bucket's host only.
- :class:`ObjectReader`: a key's size and byte ranges (``Range: bytes=a-b``), and a prefix's keys
  (``ListObjectsV2``).
- :class:`SparseFile`: the byte ranges already fetched of one object, as the seekable file
  pyarrow's Parquet reader wants. The ranges are fetched first, on the event loop; the decoding
  then runs on a worker thread with no network I/O (nothing in a worker thread waits on the loop).
"""

from __future__ import annotations

import bisect
import html
import io
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import anyio
import httpx

from harvester.archives.common import check_url
from harvester.errors import ArchiveResponseError, ConfigError, TerminalError
from harvester.io.http import HttpSession

if TYPE_CHECKING:
    from harvester.archives.common import S3Access

__all__ = [
    "ENDPOINT_VARIABLES",
    "AwsSigner",
    "CloudRoute",
    "ObjectReader",
    "S3Sessions",
    "SparseFile",
    "endpoint_from_env",
    "merge_ranges",
    "split_s3_url",
]

#: The standard variables naming an S3 endpoint, the service-specific one first (as boto3 reads them).
ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
_S3_URL = re.compile(r"^s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(/.*)?$")
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_KEY = re.compile(r"<Key>(.*?)</Key>", re.DOTALL)
_TOKEN = re.compile(r"<NextContinuationToken>(.*?)</NextContinuationToken>", re.DOTALL)
_TRUNCATED = re.compile(r"<IsTruncated>\s*true\s*</IsTruncated>", re.IGNORECASE)


@dataclass(frozen=True)
class CloudRoute:
    """One bucket at one endpoint: where a key is read from."""

    bucket: str
    endpoint: str | None = None  # None: AWS's public endpoint, virtual-hosted
    #: requests are signed: keys are fully percent-encoded (``=`` as ``%3D``), the form a
    #: signature's canonical request takes, so what is signed is exactly what is sent
    signed: bool = False

    @property
    def base(self) -> str:
        if self.endpoint is None:
            return f"https://{self.bucket}.s3.amazonaws.com"
        return f"{self.endpoint.rstrip('/')}/{self.bucket}"

    @property
    def host(self) -> str:
        return (urlsplit(self.base).hostname or "").lower()

    def url(self, key: str) -> str:
        """The anonymous GET URL of ``key``."""
        return f"{self.base}/{quote(key, safe='/' if self.signed else '/=')}"

    def list_url(self, params: Sequence[tuple[str, str]]) -> str:
        """A bucket-level request (``ListObjectsV2``) with its query encoded as a signature's
        canonical request has it (every reserved byte percent-encoded, a space as ``%20``)."""
        query = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in params)
        return f"{self.base}/?{query}"

    def describe(self) -> str:
        """``s3://bucket`` and, for a configured endpoint, where: for logs and report lines."""
        return f"s3://{self.bucket}" + (f" at {self.endpoint}" if self.endpoint else "")


def endpoint_from_env(environ: Mapping[str, str]) -> str | None:
    """The endpoint the standard AWS variables name, or None; ConfigError for a value that is not
    an http(s) URL."""
    for name in ENDPOINT_VARIABLES:
        value = environ.get(name, "").strip()
        if value:
            try:
                return check_url(value)
            except ValueError as exc:
                raise ConfigError(f"{name}: {exc}") from None
    return None


class AwsSigner:
    """Signs S3 requests with AWS Signature Version 4: botocore's ``S3SigV4Auth`` over credentials
    from botocore's standard chain (environment, profile, SSO, instance role). Temporary
    credentials are refreshed by botocore, on a worker thread (a refresh may be a network call).

    What is signed: the method, the URL exactly as sent, ``Host``, ``Range`` when present and the
    ``x-amz-*`` headers botocore adds. The secret never leaves this object; ``repr`` shows none.
    """

    def __init__(self, credentials: Any, region: str, *, where: str, key: str = "credentials") -> None:
        self._credentials = credentials
        self.region = region
        self.where = where  # "profile x" or "env": for messages, never the key
        self.key = key  # the setting that asked for signing, for messages
        self._token: str | None = None  # the session token last registered for redaction

    def __repr__(self) -> str:
        return f"AwsSigner(region={self.region!r}, credentials from {self.where})"

    async def __call__(self, request: httpx.Request) -> None:
        from botocore.auth import S3SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.exceptions import BotoCoreError

        credentials = self._credentials
        try:
            if hasattr(credentials, "refresh_needed"):  # temporary credentials: botocore refreshes them
                frozen = await anyio.to_thread.run_sync(credentials.get_frozen_credentials)
            else:
                frozen = credentials.get_frozen_credentials()
        except BotoCoreError as exc:  # an expired SSO session, a failed credential_process or role
            cause = " ".join(str(exc).split())
            raise TerminalError(
                f"{self.key}: AWS credentials from {self.where} could not be refreshed ({cause})",
                target=str(request.url.host),
            ) from None
        if frozen.token and frozen.token != self._token:  # a profile's, SSO's or a role's session
            from harvester.display.logs import register_secrets  # token: redacted like env secrets

            register_secrets((frozen.secret_key, frozen.token))
            self._token = frozen.token
        headers = {"host": request.headers["host"]}
        if "range" in request.headers:
            headers["range"] = request.headers["range"]
        signed = AWSRequest(method=request.method, url=str(request.url), headers=headers, data=b"")
        S3SigV4Auth(frozen, "s3", self.region).add_auth(signed)
        for name, value in signed.headers.items():
            if name.lower() != "host":
                request.headers[name] = value


async def load_signer(access: S3Access, environ: Mapping[str, str], *, key: str) -> AwsSigner:
    """The signer ``credentials: aws`` asks for, from botocore's credential chain (read on a
    worker thread, within 30 s: an instance-role lookup is a network call). ConfigError, one
    line naming ``key``, when botocore is missing, the profile is unknown or no credentials exist."""
    try:
        import botocore.credentials
        import botocore.exceptions
        import botocore.session
    except ImportError:
        raise ConfigError(f"{key}.credentials: aws needs botocore: pip install 'harvester[s3]'") from None

    # botocore logs each request's canonical request and signature at DEBUG: never, here
    logging.getLogger("botocore.auth").setLevel(max(logging.INFO, logging.getLogger("botocore.auth").level))

    profile = access.profile or environ.get("AWS_PROFILE")
    key_id, secret = environ.get("AWS_ACCESS_KEY_ID"), environ.get("AWS_SECRET_ACCESS_KEY")

    def load() -> tuple[Any, str | None]:
        session = botocore.session.Session(profile=profile)
        region = session.get_config_variable("region")
        if key_id and secret and access.profile is None:  # the variables (the .env file's too) win
            token = environ.get("AWS_SESSION_TOKEN")
            return botocore.credentials.Credentials(key_id, secret, token, method="env"), region
        return session.get_credentials(), region

    try:
        with anyio.fail_after(30):
            credentials, configured = await anyio.to_thread.run_sync(load, abandon_on_cancel=True)
    except TimeoutError:
        raise ConfigError(f"{key}.credentials: no AWS credentials found within 30 s") from None
    except botocore.exceptions.BotoCoreError as exc:  # an unknown profile, a broken config file
        raise ConfigError(f"{key}.credentials: {' '.join(str(exc).split())}") from None
    if credentials is None:
        raise ConfigError(
            f"{key}.credentials is aws, but no AWS credentials were found (set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or ~/.aws/credentials)"
        )
    region = (
        access.region
        or environ.get("AWS_REGION")
        or environ.get("AWS_DEFAULT_REGION")
        or configured
        or "us-east-1"
    )
    method = str(getattr(credentials, "method", "aws"))
    where = f"profile {profile}" if profile and method != "env" else method
    return AwsSigner(credentials, region, where=where, key=f"{key}.credentials")


class S3Sessions:
    """How one S3 route reads during a run: anonymously (the session without its archive token),
    or signing its requests to the bucket's host when ``access.credentials`` is ``aws`` (the
    credentials are looked up once, at the first read)."""

    def __init__(self, route: CloudRoute, access: S3Access, environ: Mapping[str, str], *, key: str) -> None:
        self.route = route
        self.access = access
        self.key = key
        self._environ = environ
        self._signer: AwsSigner | None = None
        self._lock = anyio.Lock()

    async def session(self, base: HttpSession) -> HttpSession:
        if self.access.credentials == "anonymous":
            return base.anonymous()
        async with self._lock:
            if self._signer is None:
                self._signer = await load_signer(self.access, self._environ, key=self.key)
        return base.signed(self.route.host, self._signer)


def split_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` as ``("bucket", "some/prefix")`` (no slash at either end);
    ValueError for anything else."""
    match = _S3_URL.fullmatch(url.strip())
    if match is None or ".." in match.group(1):
        raise ValueError(f"must be an s3://bucket/prefix URL, got {url!r}")
    return match.group(1), (match.group(2) or "").strip("/")


def merge_ranges(ranges: Sequence[tuple[int, int]], *, gap: int) -> list[tuple[int, int]]:
    """``(start, stop)`` byte ranges sorted and merged where they overlap or lie less than ``gap``
    bytes apart: one GET instead of several when the bytes between cost less than a request."""
    merged: list[tuple[int, int]] = []
    for start, stop in sorted(ranges):
        if merged and start <= merged[-1][1] + gap:
            merged[-1] = (merged[-1][0], max(merged[-1][1], stop))
        else:
            merged.append((start, stop))
    return merged


class ObjectReader:
    """Sizes, byte ranges and listings of one bucket's keys, through an anonymous session."""

    def __init__(self, session: HttpSession, route: CloudRoute, *, max_bytes: int) -> None:
        self.session = session
        self.route = route
        self.max_bytes = max_bytes

    async def get(self, key: str, *, target: str) -> bytes:
        """The whole object (small metadata files only: ``hats.properties``, partition lists)."""
        response = await self.session.fetch(
            "GET", self.route.url(key), target=target, max_bytes=self.max_bytes
        )
        return response.content

    async def tail(self, key: str, nbytes: int, *, target: str) -> tuple[int, int, bytes]:
        """The last ``nbytes`` of an object (fewer if it is smaller): ``(object size, offset of the
        first byte returned, bytes)``. A server that ignores ``Range`` and answers the whole object
        (200) is taken at its word, within the size cap."""
        response = await self.session.fetch(
            "GET",
            self.route.url(key),
            target=target,
            headers={"Range": f"bytes=-{nbytes}"},
            max_bytes=max(self.max_bytes, nbytes),  # a footer: asked for by size, whatever the cap
        )
        if response.status_code == 200:
            return len(response.content), 0, response.content
        first, size = _content_range(response.headers, key, target)
        return size, first, response.content

    async def range(self, key: str, start: int, stop: int, *, target: str) -> bytes:
        """Bytes ``start`` to ``stop`` (not included) of an object; ArchiveResponseError when the
        answer is not exactly those bytes (a truncated or misplaced body is never decoded)."""
        response = await self.session.fetch(
            "GET",
            self.route.url(key),
            target=target,
            headers={"Range": f"bytes={start}-{stop - 1}"},
            max_bytes=max(self.max_bytes, stop - start),
        )
        content = response.content
        if response.status_code == 200:
            content = content[start:stop]  # a server without Range support: the whole object
        else:
            first, _size = _content_range(response.headers, key, target)
            if first != start:
                raise ArchiveResponseError(
                    f"s3 answered bytes from {first} of {key}, asked from {start}", target=target
                )
        if len(content) != stop - start:
            raise ArchiveResponseError(
                f"s3 answered {len(content):,} of {stop - start:,} bytes of {key} (truncated)", target=target
            )
        return content

    async def list(self, prefix: str, *, target: str) -> list[str]:
        """Every key under ``prefix`` (S3 ``ListObjectsV2``, all pages), sorted."""
        keys: list[str] = []
        token: str | None = None
        while True:
            params = [("list-type", "2"), ("prefix", prefix)]
            if token is not None:
                params.append(("continuation-token", token))
            response = await self.session.fetch(
                "GET", self.route.list_url(params), target=target, max_bytes=self.max_bytes
            )
            text = response.text
            if "<ListBucketResult" not in text:
                raise ArchiveResponseError(
                    f"s3 listing of {prefix} is not a ListBucketResult document", target=target
                )
            keys.extend(html.unescape(k) for k in _KEY.findall(text))
            found = _TOKEN.search(text)
            if not _TRUNCATED.search(text) or found is None:
                return sorted(keys)
            token = html.unescape(found.group(1))


def _content_range(headers: Mapping[str, str], key: str, target: str) -> tuple[int, int]:
    value = next((v for k, v in headers.items() if k.lower() == "content-range"), "")
    match = _CONTENT_RANGE.fullmatch(value.strip())
    if match is None or match.group(3) == "*":
        raise ArchiveResponseError(
            f"s3 answered a partial read of {key} without a usable Content-Range ({value!r})", target=target
        )
    return int(match.group(1)), int(match.group(3))


class SparseFile(io.RawIOBase):
    """A read-only, seekable view of the fetched byte ranges of one object of known size.

    A read that reaches bytes not fetched raises OSError naming them: the ranges to fetch are
    worked out from the Parquet footer before decoding, so this means that plan missed a column.
    """

    def __init__(self, name: str, size: int, segments: Mapping[int, bytes]) -> None:
        super().__init__()
        self.name = name
        self.size = size
        self._starts = sorted(segments)
        self._segments = dict(segments)
        self._pos = 0

    def add(self, start: int, data: bytes) -> None:
        if start not in self._segments:
            bisect.insort(self._starts, start)
        self._segments[start] = data

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        want = min(len(buffer), max(0, self.size - self._pos))
        if want == 0:
            return 0
        data = self._slice(self._pos, self._pos + want)
        buffer[:want] = data
        self._pos += want
        return want

    def _slice(self, start: int, stop: int) -> bytes:
        i = bisect.bisect_right(self._starts, start) - 1
        if i >= 0:
            first = self._starts[i]
            data = self._segments[first]
            if first + len(data) >= stop:
                return data[start - first : stop - first]
        raise OSError(f"{self.name}: bytes {start}-{stop} were not fetched")
