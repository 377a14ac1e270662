"""Reference retrieval: an index of reference-image embeddings and top-k search."""

from restoreflow.retrieval.index import (
    IndexMismatchError,
    ReferenceIndex,
    prepare_query,
    retrieval_accuracy,
)

__all__ = ["IndexMismatchError", "ReferenceIndex", "prepare_query", "retrieval_accuracy"]
