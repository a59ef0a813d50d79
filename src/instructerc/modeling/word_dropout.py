"""LoRA dropout on a CPU from 15-bit slices of random words, not one random number per element.

peft runs ``nn.Dropout`` on the input of every adapted layer, and on a CPU PyTorch draws the
mask with ``bernoulli_``, about 4 ns an element whatever the dtype: 11% of a bf16 training step
of the default recipe's template. Here each 32-bit word from the same generator gives two
15-bit uniform numbers, and an element is dropped where its number is below ``p`` x 2^15. On a
250 x 576 bf16 input (a step's rows, one layer) the whole dropout took 260-430 us against 665-820 us for
``F.dropout``.

``p`` is rounded to a multiple of 2^-15 (0.05 becomes 0.049988), and the kept elements are
scaled by ``1 / (1 - p)`` for that rounded ``p``, so every element keeps its expected value.
Outside training, at ``p`` = 0 and off the CPU (GPUs draw masks in parallel), it is
``F.dropout`` as before. The draws use the default CPU generator, so seeding and checkpointed
random states cover them as they covered ``bernoulli_``.
"""

from __future__ import annotations

from typing import Any

LEVELS = 1 << 15


def _word_dropout_class() -> Any:
    import torch

    class WordDropout(torch.nn.Dropout):
        """``nn.Dropout`` whose CPU training mask comes from 15-bit slices of random words."""

        def __init__(self, p: float) -> None:
            super().__init__(p)
            self.threshold = round(p * LEVELS)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if not self.training or x.device.type != "cpu" or self.threshold == 0 or self.threshold >= LEVELS:
                return super().forward(x)
            count = x.numel()
            # int32 random_() fills bits 0-30: both 16-bit halves hold 15 uniform low bits.
            words = torch.empty((count + 1) // 2, dtype=torch.int32).random_()
            numbers = words.view(torch.int16)[:count].bitwise_and_(LEVELS - 1).view(x.shape)
            keep = numbers >= self.threshold
            return x * keep * (LEVELS / (LEVELS - self.threshold))

    return WordDropout


def use_word_dropout(model: Any) -> int:
    """Replace the ``nn.Dropout`` modules of the model's LoRA adapters with :class:`WordDropout`,
    in place; returns how many were replaced."""
    import torch

    word_dropout = _word_dropout_class()
    replaced = 0
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if not isinstance(dropouts, torch.nn.ModuleDict):
            continue
        for name, dropout in dropouts.items():
            if type(dropout) is torch.nn.Dropout and dropout.p > 0:
                dropouts[name] = word_dropout(dropout.p)
                replaced += 1
    return replaced
