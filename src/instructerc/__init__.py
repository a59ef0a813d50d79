"""instructerc: emotion recognition in conversation as instruction-tuned generation.

This package imports nothing itself (it sits below every layer, see README.md's Architecture),
so the Python API is imported from its modules, as README.md's example does:

- :class:`instructerc.data.dialogue.Dialogue` and :class:`instructerc.data.dialogue.Utterance`:
  a conversation to label, built by hand, or read with :func:`instructerc.data.jsonl.read_jsonl`.
- :class:`instructerc.inference.predictor.Predictor`: ``Predictor.from_directory(DIR)`` loads a
  model directory; ``predict`` labels whole dialogues, ``predict_next`` a live conversation's
  newest turn from its :class:`instructerc.inference.incremental.ConversationCache`.
- :func:`instructerc.modeling.default_model.default_model_dir`: the model shipped in the package.
- :class:`instructerc.errors.InputError`: a value refused (a ``ValueError`` naming the field);
  an argument of the wrong kind raises ``TypeError``.
"""

__version__ = "0.1.0"
