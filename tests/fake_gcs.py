"""An in-memory stand-in for Google Cloud Storage, as etils.epath reaches it (fsspec's 'gcs' filesystem, which
gcsfs provides): objects written whole, never appended to. Use the `bucket` fixture pattern:

    register()            # gs:// paths now open this store
    ...
    clear()
"""

import fsspec
from fsspec.implementations.memory import MemoryFileSystem


class FakeGCS(MemoryFileSystem):
    protocol = ("gcs", "gs")
    store, pseudo_dirs = {}, [""]

    def __init__(self, *args, finalize_on_close: bool = False, **kwargs):
        super().__init__(*args, **kwargs)

    @classmethod
    def _strip_protocol(cls, path):
        """'gs://bucket/a' -> 'bucket/a', as gcsfs names objects (epath puts gs:// back on what glob finds)."""
        path = path[0] if isinstance(path, list) else path
        for prefix in ("gs://", "gcs://"):
            path = path.removeprefix(prefix)
        return path.rstrip("/")

    def _open(self, path, mode="rb", **kwargs):
        if "a" in mode:
            raise NotImplementedError(f"{path}: a GCS object cannot be appended to")
        return super()._open(path, mode, **kwargs)


def register() -> None:
    fsspec.register_implementation("gcs", FakeGCS, clobber=True)


def clear() -> None:
    FakeGCS.store.clear()
    FakeGCS.pseudo_dirs[:] = [""]
