"""A task's image from its URL, as Label Studio stores it, bounded in bytes, pixels and time.

* ``/data/upload/...`` and other paths of the Label Studio server: fetched from
  ``LABEL_STUDIO_URL`` with ``LABEL_STUDIO_API_KEY`` (``Authorization: Token``);
* ``/data/local-files/?d=PATH``: read from ``LOCAL_FILES_DOCUMENT_ROOT`` when that is set here
  (the backend runs beside Label Studio), else fetched from the Label Studio server;
* ``s3://``, ``gs://``, ``azure-blob://``, ...: resolved by Label Studio (its storage's
  credentials) through ``/tasks/<id>/resolve/?fileuri=...``;
* ``http(s)://``: fetched as is; the API key goes only to the Label Studio server's own host.

Every failure raises ``ImageFetchError`` with a message naming the URL and the fix.
"""
from __future__ import annotations

import base64
import io
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional
from urllib.parse import parse_qs, quote, urljoin, urlsplit

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 50_000_000
DEFAULT_MAX_BYTES = 100 << 20
DEFAULT_TIMEOUT = 30.0
STORAGE_SCHEMES = ("s3", "gs", "azure-blob", "azure-spi")
LOCAL_FILES_PREFIX = "/data/local-files/"


class ImageFetchError(ValueError):
    """A task image that cannot be fetched or decoded; the message is for the user."""


@dataclass
class ImageSource:
    """Where task images come from and the bounds on them.

    ``label_studio_url``: the Label Studio server (``LABEL_STUDIO_URL``) for its uploads and
    storages; ``api_key``: a token of a Label Studio user (``LABEL_STUDIO_API_KEY``);
    ``local_root``: Label Studio's ``LOCAL_FILES_DOCUMENT_ROOT`` when readable here.
    ``max_pixels`` is checked from the file's header, before decoding.
    """

    label_studio_url: Optional[str] = None
    api_key: Optional[str] = None
    local_root: Optional[Path] = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_bytes: int = DEFAULT_MAX_BYTES
    timeout: float = DEFAULT_TIMEOUT

    def load(self, url: str, task_id: Optional[int] = None) -> np.ndarray:
        """The image at ``url`` (a task's data value) as H x W x 3 uint8 RGB."""
        return decode_image(self.fetch(url, task_id), url, self.max_pixels)

    def fetch(self, url: str, task_id: Optional[int] = None) -> bytes:
        """The bytes at ``url`` (module docstring for the kinds of URL)."""
        if not isinstance(url, str) or not url.strip():
            raise ImageFetchError(f"the task's image URL is {url!r}; expected a URL or a Label Studio path")
        url = url.strip()
        scheme = urlsplit(url).scheme.lower()
        if scheme in STORAGE_SCHEMES:
            if task_id is None:
                raise ImageFetchError(f"{url!r} is a cloud storage URI; Label Studio resolves it for a task, "
                                      "and the request names none")
            fileuri = base64.urlsafe_b64encode(url.encode()).decode()
            return self._from_label_studio(f"/tasks/{task_id}/resolve/?fileuri={quote(fileuri)}", url)
        if scheme in ("http", "https"):
            return self._download(url, url, with_key=self._is_label_studio(url))
        if scheme:
            raise ImageFetchError(f"image URL {url!r}: the scheme {scheme!r} is not served; use http(s), a Label "
                                  f"Studio upload or storage ({', '.join(STORAGE_SCHEMES)}), or local files")
        if url.startswith(LOCAL_FILES_PREFIX) and self.local_root is not None:
            return self._local_file(url)
        if url.startswith("/"):
            return self._from_label_studio(url, url)
        raise ImageFetchError(f"image URL {url!r} is neither absolute (http, https, s3, ...) nor a Label Studio "
                              "path (/data/upload/..., /data/local-files/?d=...)")

    # --- the kinds of URL ---

    def _is_label_studio(self, url: str) -> bool:
        if not self.label_studio_url:
            return False
        ours, theirs = urlsplit(self.label_studio_url), urlsplit(url)
        return (ours.scheme.lower(), ours.netloc.lower()) == (theirs.scheme.lower(), theirs.netloc.lower())

    def _from_label_studio(self, path: str, shown: str) -> bytes:
        if not self.label_studio_url:
            raise ImageFetchError(f"image {shown!r} is stored by Label Studio: set LABEL_STUDIO_URL (e.g. "
                                  "http://localhost:8080) and LABEL_STUDIO_API_KEY for the backend to fetch it")
        return self._download(urljoin(self.label_studio_url.rstrip("/") + "/", path.lstrip("/")), shown, with_key=True)

    def _local_file(self, url: str) -> bytes:
        relative = parse_qs(urlsplit(url).query).get("d", [""])[0]
        root = self.local_root.resolve()
        path = (root / relative).resolve()
        if not relative or root not in path.parents:
            raise ImageFetchError(f"local file {url!r} lies outside LOCAL_FILES_DOCUMENT_ROOT {str(root)!r}")
        try:
            size = path.stat().st_size
            if size > self.max_bytes:
                raise ImageFetchError(f"local file {str(path)!r} has {size} bytes, over the limit of "
                                      f"{self.max_bytes} (--max-bytes)")
            return path.read_bytes()
        except OSError as err:
            raise ImageFetchError(f"cannot read local file {str(path)!r} of {url!r} ({err.strerror or err})") from None

    def _download(self, url: str, shown: str, with_key: bool) -> bytes:
        request = urllib.request.Request(url, headers={"User-Agent": "skipclick-label-studio"})
        if with_key:
            if not self.api_key:
                raise ImageFetchError(f"image {shown!r} is on the Label Studio server: set LABEL_STUDIO_API_KEY to a "
                                      "user's access token (Label Studio: Account & Settings)")
            # Not passed on to a redirect's target (a presigned storage URL must not get the token).
            request.add_unredirected_header("Authorization", f"Token {self.api_key}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                length = response.headers.get("Content-Length")
                if length is not None and length.isdigit() and int(length) > self.max_bytes:
                    raise ImageFetchError(f"image {shown!r} has {length} bytes, over the limit of {self.max_bytes} "
                                          "(--max-bytes)")
                data = response.read(self.max_bytes + 1)
        except urllib.error.HTTPError as err:
            hint = " (check LABEL_STUDIO_API_KEY)" if err.code in (401, 403) and with_key else ""
            raise ImageFetchError(f"cannot fetch image {shown!r}: HTTP {err.code} {err.reason}{hint}") from None
        except (urllib.error.URLError, OSError, ValueError) as err:
            reason = getattr(err, "reason", None) or err
            raise ImageFetchError(f"cannot fetch image {shown!r}: {reason}") from None
        if len(data) > self.max_bytes:
            raise ImageFetchError(f"image {shown!r} is over the limit of {self.max_bytes} bytes (--max-bytes)")
        return data


def decode_image(data: bytes, shown: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """``data`` (an encoded image) as H x W x 3 uint8 RGB (EXIF orientation applied, as browsers
    show it), refused before decoding when its header says more than ``max_pixels``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as header:
                width, height = header.size
    except Image.DecompressionBombError:
        width = height = None   # over Pillow's own bound, which is above any sensible max_pixels
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageFetchError(f"{shown!r} is not an image ({len(data)} bytes; {err})") from None
    if width is not None and min(width, height) < 2:
        raise ImageFetchError(f"image {shown!r} is {width} x {height} px, too small to segment")
    if width is None or width * height > max_pixels:
        size = "more than Pillow's bound" if width is None else f"{width} x {height} = {width * height}"
        raise ImageFetchError(f"image {shown!r} has {size} pixels, over the limit of {max_pixels} (--max-pixels)")
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ImageFetchError(f"cannot decode image {shown!r}: damaged, or a format OpenCV does not read; "
                              "use PNG or JPEG")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
