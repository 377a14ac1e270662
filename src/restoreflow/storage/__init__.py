"""restoreflow.storage: the tile store (zarr v3 over fsspec, local or S3), image
readers and writers, source expansion, ingest and export.

See docs/store-layout.md for the on-disk layout. The verbs live in their modules
(``restoreflow.storage.ingest.ingest``, ``restoreflow.storage.export.export``), whose
names would clash with the package attributes.
"""

from restoreflow.storage.decode import ImageRejected
from restoreflow.storage.grid import tile_grid
from restoreflow.storage.ingest import IngestRejected, IngestReport, ingest_array
from restoreflow.storage.layout import INPUT, STATUS_COMPLETE, STATUS_WRITING
from restoreflow.storage.readers import read_image
from restoreflow.storage.store import TileStore
from restoreflow.storage.values import from_normalised, normalisation, to_normalised

__all__ = [
    "INPUT",
    "STATUS_COMPLETE",
    "STATUS_WRITING",
    "ImageRejected",
    "IngestRejected",
    "IngestReport",
    "TileStore",
    "from_normalised",
    "ingest_array",
    "normalisation",
    "read_image",
    "tile_grid",
    "to_normalised",
]
