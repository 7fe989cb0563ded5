"""Create-only object writes to a local folder or any fsspec URL (``s3://…``, ``file://…``).

Outputs past one machine are idempotent, not renamed (S3 has no atomic rename):

- a local path (or ``file://`` URL) uses the pipeline's own create-only write: a hidden temporary
  file, flushed to disk, given its name by a create-only rename or hard link (atomic, and it
  fails if the name exists), then the folder flushed;
- any other fsspec URL writes with ``pipe_file(..., mode="create")``; s3fs sends
  ``If-None-Match: *`` so S3 (and moto) answer 412 when the key exists, which s3fs raises as
  ``FileExistsError``. A single PUT never leaves a partial object.

:meth:`ObjectStore.put_new` returns False instead of raising when the key already exists: the
caller decides whether that is "another attempt already did it" (re-executed work units).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from harvester.errors import ConfigError, OutputError
from harvester.io.files import make_folder
from harvester.io.writers import _create_once

__all__ = ["ObjectStore", "is_url"]


def is_url(output: str | Path) -> bool:
    """Whether ``output`` names an fsspec URL rather than a local path."""
    return "://" in str(output)


class ObjectStore:
    """Keys (``a/b/c.json``) under one root: a local folder or an fsspec URL."""

    def __init__(self, root: str | Path, storage_options: dict[str, Any] | None = None) -> None:
        text = str(root)
        if text.startswith("file://"):
            text = text[len("file://") :]
        self.url = text.rstrip("/")
        self.local = not is_url(text)
        self._options = storage_options or {}
        self._fs: Any = None
        if not self.local:
            try:
                import fsspec
            except ImportError as exc:
                raise ConfigError(
                    f"output {text}: object-store outputs need the dask extra: "
                    f"pip install 'harvester[dask]' ({exc.name})"
                ) from None

            protocol, path = text.split("://", 1)
            try:
                self._fs = fsspec.filesystem(protocol, **self._options)
            except (ImportError, ValueError) as exc:  # no backend installed, or an unknown protocol
                raise ConfigError(f"output {text}: {exc}") from None
            self._root = f"{protocol}://{path.rstrip('/')}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (ObjectStore, (self.url, self._options))

    def _path(self, key: str) -> str:
        return f"{self.url}/{key}" if self.local else f"{self._root}/{key}"

    def put_new(self, key: str, data: bytes) -> bool:
        """Write ``data`` at ``key`` only if the key does not exist; False when it already did."""
        target = self._path(key)
        if self.local:
            path = Path(target)
            try:
                make_folder(path.parent)
            except OSError as exc:
                raise OutputError(f"cannot write to {path.parent}: {exc.strerror or exc}") from None
            return _create_once(path, data, durable=True) is not None
        try:
            self._fs.pipe_file(target, data, mode="create")
        except FileExistsError:
            return False
        except Exception as exc:  # botocore/aiohttp errors are not OSErrors: one line, whatever they are
            raise _store_error("write", target, exc) from None
        return True

    def get(self, key: str) -> bytes | None:
        """The object's bytes, or None when it does not exist."""
        target = self._path(key)
        if self.local:
            try:
                return Path(target).read_bytes()
            except FileNotFoundError:
                return None
        try:
            data: bytes = self._fs.cat_file(target)
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise _store_error("read", target, exc) from None
        return data

    @contextlib.contextmanager
    def open(self, key: str) -> Iterator[IO[bytes]]:
        """The object as a binary file, read as it is consumed (not held whole in memory)."""
        target = self._path(key)
        try:
            fh: IO[bytes] = open(target, "rb") if self.local else self._fs.open(target, "rb")  # noqa: SIM115
        except FileNotFoundError:
            raise OutputError(f"cannot read {target}: it does not exist") from None
        except Exception as exc:
            raise _store_error("read", target, exc) from None
        with fh:
            yield fh

    def list(self, prefix: str) -> list[str]:
        """Keys under ``prefix`` (recursively), sorted; hidden temporary files are left out."""
        base = self._path(prefix.rstrip("/"))
        if self.local:
            root = Path(base)
            if not root.is_dir():
                return []
            keys = [p.relative_to(self.url).as_posix() for p in root.rglob("*") if p.is_file()]
        else:
            found: list[str] = []
            self._fs.invalidate_cache()
            try:
                found = list(self._fs.find(base))
            except FileNotFoundError:
                pass
            except Exception as exc:
                raise _store_error("list", base, exc) from None
            strip = self._root.split("://", 1)[1] + "/"
            keys = [f[len(strip) :] if f.startswith(strip) else f for f in found]
        return sorted(k for k in keys if not k.rsplit("/", 1)[-1].startswith("."))

    def probe(self) -> None:
        """Check, before any unit runs, that the store is reachable, writable and create-only.

        Writes a small probe object twice (the second write must be refused), then removes it:
        credentials, a missing bucket and a store that ignores ``If-None-Match`` (some S3
        look-alikes) fail here, in one line, instead of in every unit.
        """
        key = f"_probe/{uuid.uuid4().hex}"
        if not self.put_new(key, b"probe"):
            raise OutputError(f"cannot write to {self.url}: a new probe object already existed")
        try:
            if self.put_new(key, b"again"):
                raise OutputError(
                    f"{self.url} does not refuse a second write to the same key (no create-only "
                    "writes, If-None-Match): work units could not be made exactly-once there"
                )
        finally:
            self.remove(key)

    def remove(self, key: str) -> None:
        """Remove ``key`` if it is there, on a best-effort basis (for objects whose loss or
        survival is harmless: probes, superseded history summaries)."""
        target = self._path(key)
        with contextlib.suppress(Exception):
            if self.local:
                Path(target).unlink()
                with contextlib.suppress(OSError):
                    Path(target).parent.rmdir()
            else:
                self._fs.rm_file(target)


def _store_error(action: str, target: str, exc: Exception) -> OutputError:
    detail = str(exc).splitlines()[0] if str(exc) else ""
    return OutputError(f"cannot {action} {target}: {type(exc).__name__}: {detail}".rstrip(": "))
