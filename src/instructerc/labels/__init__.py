"""Label sets (canonical names and the words shown to a model) and the unified label space."""

from instructerc.labels.label_set import LabelSet
from instructerc.labels.registry import label_set_names, named_label_set, resolve_label_space
from instructerc.labels.unified import MAPPINGS, UnifiedMapping, get_mapping

__all__ = [
    "MAPPINGS",
    "LabelSet",
    "UnifiedMapping",
    "get_mapping",
    "label_set_names",
    "named_label_set",
    "resolve_label_space",
]
