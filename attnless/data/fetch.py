"""Network access of the data layer: the cache folder, URL downloads and Hugging Face hub files.

Every download is written through :func:`attnless.runs.atomic_open` (temporary file, then rename),
so an interrupted or failed download never leaves a partial file under its final name. Tests
replace :func:`download_url` and :func:`hub_download` (looked up at call time) to stay offline.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..runs import atomic_open
from .errors import DataError

TIMEOUT_S = 20.0


def cache_root() -> Path:
    """``$ATTNLESS_CACHE``, else ``~/.cache/attnless``."""
    return Path(os.environ.get("ATTNLESS_CACHE") or Path.home() / ".cache" / "attnless")


def download_url(url: str, dest: Path, *, magic: bytes = b"", timeout: float = TIMEOUT_S) -> Path:
    """Download ``url`` to ``dest`` atomically; the body must start with ``magic``.

    Raises OSError (``urllib.error.URLError`` included) on network failure and DataError when the
    body does not start with ``magic`` (e.g. an HTML error page instead of a gzip file).
    """
    import urllib.request

    dest = Path(dest)
    with urllib.request.urlopen(url, timeout=timeout) as response, atomic_open(dest, "wb") as out:
        head = response.read(len(magic)) if magic else b""
        if head != magic:
            raise DataError(f"{url}: downloaded data starts with {head!r}; expected {magic!r}")
        out.write(head)
        shutil.copyfileobj(response, out)
    return dest


def hub_download(repo_id: str, filename: str, local_dir: Path) -> Path:
    """Fetch one file of a Hugging Face *dataset* repository into ``local_dir/filename``.

    ``huggingface_hub`` is imported here, not at module import. It downloads to a hidden
    ``.cache/huggingface`` folder inside ``local_dir`` and moves the finished file into place.
    """
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as err:
        raise DataError(
            f"huggingface_hub is not installed ({err}); install it or provide the files locally"
        ) from None
    path = hf_hub_download(
        repo_id=repo_id, repo_type="dataset", filename=filename, local_dir=str(local_dir)
    )
    return Path(path)
