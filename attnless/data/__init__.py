"""Corpus layer: load line-aligned parallel text for a configured corpus and split.

Entry point: :func:`load_split` (``multi30k``, ``iwslt2017`` or ``text``). Every data problem
raises :class:`DataError`. Nothing heavy is imported here; ``huggingface_hub`` is imported only
when a download from the hub is needed.
"""

from .corpora import (
    CORPORA,
    SPLITS,
    SUPPORTED_CORPORA,
    Corpus,
    describe_source,
    group_pairs,
    load_split,
)
from .errors import DataError
from .textio import ParallelText, read_lines, read_parallel
from .wit3 import parse_train_tags, parse_xml_segments

__all__ = [
    "CORPORA",
    "SPLITS",
    "SUPPORTED_CORPORA",
    "Corpus",
    "DataError",
    "ParallelText",
    "describe_source",
    "group_pairs",
    "load_split",
    "parse_train_tags",
    "parse_xml_segments",
    "read_lines",
    "read_parallel",
]
