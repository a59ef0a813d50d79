"""--no-progress also silences the bar of the embedded model's one-off GGUF conversion."""

from __future__ import annotations


def test_the_gguf_conversion_bar_is_off_while_transformers_bars_are() -> None:
    from transformers import modeling_gguf_pytorch_utils as gguf_utils
    from transformers.utils import logging as transformers_logging

    from instructerc.modeling.backbone import gguf_bar_follows_transformers

    original = gguf_utils.tqdm
    transformers_logging.disable_progress_bar()
    try:
        with gguf_bar_follows_transformers():
            assert gguf_utils.tqdm([1, 2]).disable
        assert gguf_utils.tqdm is original
    finally:
        transformers_logging.enable_progress_bar()
    with gguf_bar_follows_transformers():
        assert gguf_utils.tqdm is original, "with bars on, the bar is left as transformers draws it"
