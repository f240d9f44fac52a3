"""Paths that may be local or in an object store (`gs://bucket/...`).

Everything that names a run's files goes through `etils.epath` (gcsfs underneath for gs://), and
orbax writes checkpoints there itself (tensorstore speaks gs://). Three things cannot work on an
object store directly, so they go through a local copy kept in `$JAXCD_CACHE/remote/`:
datasets and weight files (`local_copy`: read by rasterio, PIL, array_record and torch from local
files; synced by size, so a second run downloads nothing) and the files a run appends to
(`Staged`: metrics.jsonl and TensorBoard events are written locally and uploaded whole).

`check_workdir` turns the ways a remote workdir goes wrong (no such bucket, no credentials, an
unreachable endpoint, a file where the workdir should be) into one-line `StorageError`s before any
work starts. With `STORAGE_EMULATOR_HOST` set (a local GCS emulator, as in the tests), gcsfs uses
it, and tensorstore is pointed at the same endpoint.
"""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import socket
import time
import urllib.parse
from pathlib import Path

from etils import epath

from jaxcd.errors import JaxcdError, one_line

REMOTE_SCHEMES = ("gs://",)
RETRIES = 3  # connection attempts to a storage endpoint before giving up (1 s, 2 s apart)


def _configure() -> None:
  """Idempotent; run at import and again before each remote use (an emulator's address may be
  set after import, as in-process tests do)."""
  emulator = os.environ.get("STORAGE_EMULATOR_HOST")
  if emulator:
    os.environ.setdefault("TENSORSTORE_GCS_HTTP_URL", emulator)
    os.environ.setdefault("GOOGLE_AUTH_TOKEN_FOR_TESTING", "emulator")  # an emulator checks none
    # gcsfs's hierarchical-namespace probe calls Google's control-plane API, which an emulator
    # does not serve: without this every directory operation waits for its retries.
    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    import fsspec
    # The same if gcsfs was imported before the emulator was known; and no credential search
    # (it probes a cloud metadata server first).
    fsspec.register_implementation("gs", "gcsfs.core.GCSFileSystem", clobber=True)
    fsspec.config.conf.setdefault("gs", {}).setdefault("token", "anon")
  # gcsfs asks each bucket for its type with the default credentials and logs when it cannot.
  logging.getLogger("gcsfs").setLevel(logging.ERROR)
  # No cached listings: other processes (a run's other hosts, a resumed run) write checkpoints
  # the cache would not show.
  if importlib.util.find_spec("fsspec"):
    import fsspec
    fsspec.config.conf.setdefault("gs", {}).setdefault("cache_timeout", 0)


_configure()  # before anything imports gcsfs


class StorageError(JaxcdError, OSError):
  """A storage location cannot be used (missing bucket, credentials, endpoint). Names the path."""


def is_remote(path) -> bool:
  return str(path).startswith(REMOTE_SCHEMES)


def path(p) -> epath.Path:
  """An epath for `p`."""
  if is_remote(p):
    _configure()
    _require_gcsfs(str(p))
  return epath.Path(p)


def _require_gcsfs(where: str) -> None:
  if importlib.util.find_spec("gcsfs") is None:
    raise StorageError(f"{where}: gs:// paths need gcsfs: pip install 'jaxcd[gcs]'")


def join(base, *parts: str) -> str:
  """os.path.join that keeps a URL a URL (`gs://b/run` + `best` -> `gs://b/run/best`)."""
  if is_remote(base):
    return "/".join([str(base).rstrip("/"), *(p.strip("/") for p in parts)])
  return os.path.join(base, *parts)


def absolute(p) -> str:
  return str(p) if is_remote(p) else os.path.abspath(p)


def _endpoint() -> tuple[str, int]:
  url = urllib.parse.urlparse(os.environ.get("STORAGE_EMULATOR_HOST")
                              or "https://storage.googleapis.com")
  return url.hostname or "localhost", url.port or (443 if url.scheme == "https" else 80)


def _reach_endpoint(where: str) -> None:
  host, port = _endpoint()
  for attempt in range(RETRIES):
    try:
      socket.create_connection((host, port), timeout=5).close()
      return
    except OSError as e:
      err = e
      if attempt + 1 < RETRIES:
        time.sleep(attempt + 1)
  raise StorageError(f"{where}: storage endpoint {host}:{port} unreachable after {RETRIES} "
                     f"tries ({one_line(err)})")


def _check_credentials(where: str) -> None:
  if os.environ.get("STORAGE_EMULATOR_HOST"):
    return
  import google.auth
  try:
    google.auth.default()
  except google.auth.exceptions.DefaultCredentialsError:
    raise StorageError(f"{where}: no Google Cloud credentials (run `gcloud auth "
                       "application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS to a "
                       "service-account key file)") from None


def check_remote(where: str) -> None:
  """Endpoint reachable, credentials present and the bucket exists, else a StorageError."""
  _configure()
  _require_gcsfs(where)
  _check_credentials(where)
  _reach_endpoint(where)
  bucket = urllib.parse.urlparse(where).netloc
  try:
    import fsspec
    fsspec.filesystem("gs").ls(bucket, detail=False)
  except FileNotFoundError:
    raise StorageError(f"{where}: bucket gs://{bucket} does not exist") from None
  except OSError as e:
    raise StorageError(f"{where}: cannot list bucket gs://{bucket} ({one_line(e)})") from None


def check_workdir(workdir) -> None:
  """A workdir is a directory (or does not exist yet), and a remote one can be written."""
  if is_remote(workdir):
    check_remote(str(workdir))
  if path(workdir).is_file():
    raise StorageError(f"{workdir}: the workdir is a file; give a directory")


def _cache_root() -> Path:
  return Path(os.environ.get("JAXCD_CACHE", Path.home() / ".cache" / "jaxcd")) / "remote"


def _mirror_path(url: str) -> Path:
  u = urllib.parse.urlparse(url)
  return _cache_root() / u.scheme / u.netloc / u.path.strip("/")


def local_copy(url, what: str = "path") -> str:
  """A local path holding the file or folder at `url` (unchanged if local). Files already
  downloaded with the same size are kept; each file is written whole, then renamed, so
  processes sharing the cache never read half a file."""
  if not is_remote(url):
    return str(url)
  url = str(url).rstrip("/")
  check_remote(url)
  import fsspec
  fs = fsspec.filesystem("gs")
  dst = _mirror_path(url)
  if fs.isfile(url):
    _fetch(fs, url, fs.info(url)["size"], dst)
    return str(dst)
  found = fs.find(url, detail=True)  # {"bucket/key": info}, one listing with sizes
  if not found:
    raise StorageError(f"{url}: {what} not found (no such file or folder)")
  base = url[len("gs://"):]
  for key, info in sorted(found.items()):
    _fetch(fs, key, info["size"], dst / os.path.relpath(key, base))
  return str(dst)


def _fetch(fs, key: str, size: int, dst: Path) -> None:
  if dst.is_file() and dst.stat().st_size == size:
    return
  dst.parent.mkdir(parents=True, exist_ok=True)
  tmp = dst.with_name(f".{dst.name}.{os.getpid()}.part")
  fs.get_file(key, str(tmp))
  os.replace(tmp, dst)


class Staged:
  """A local folder standing in for a remote one: files are written locally and uploaded whole
  by `upload` (an object store has no append). For a local folder it is that folder."""

  def __init__(self, folder):
    self.remote = str(folder) if is_remote(folder) else None
    if self.remote is None:
      self.local = str(folder)
    else:
      digest = hashlib.sha1(self.remote.encode()).hexdigest()[:16]
      self.local = str(_cache_root() / "staged" / f"{digest}-{os.getpid()}")
    os.makedirs(self.local, exist_ok=True)
    self._sent: dict[str, tuple[int, int]] = {}  # file -> (size, mtime_ns) last uploaded

  def download(self, name: str) -> None:
    """Brings the remote `name` (a file) into the local folder, if the remote has it."""
    if self.remote is None:
      return
    src = path(join(self.remote, name))
    if src.is_file():
      Path(self.local, name).parent.mkdir(parents=True, exist_ok=True)
      Path(self.local, name).write_bytes(src.read_bytes())

  def upload(self) -> None:
    """Copies each local file changed since its last upload to the remote folder (a no-op
    for a local folder)."""
    if self.remote is None:
      return
    for root, _, files in os.walk(self.local):
      for name in files:
        f = os.path.join(root, name)
        st = os.stat(f)
        if self._sent.get(f) == (st.st_size, st.st_mtime_ns):
          continue
        self._sent[f] = (st.st_size, st.st_mtime_ns)
        dst = path(join(self.remote, os.path.relpath(f, self.local)))
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(Path(f).read_bytes())
