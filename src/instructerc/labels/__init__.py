"""Label sets (canonical names and the words shown to a model) and the unified label space."""

from instructerc.labels.label_set import LabelSet
from instructerc.labels.registry import dataset_label_set, label_set_names, resolve_label_space
from instructerc.labels.unified import MAPPINGS, UnifiedMapping, get_mapping

__all__ = [
    "MAPPINGS",
    "LabelSet",
    "UnifiedMapping",
    "dataset_label_set",
    "get_mapping",
    "label_set_names",
    "resolve_label_space",
]
