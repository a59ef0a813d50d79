"""``instructerc serve``: an HTTP API over a model directory.

Endpoints (the full schema is served at ``/openapi.json``, browsable at ``/docs``):

``POST /v1/predict``
    Body ``{"dialogues": [{"id": "d1", "utterances": [{"speaker": "Ann", "text": "Hi!"}, ...]}]}``,
    the user JSONL format (only the ``dialogues`` wrapper is accepted; wrap a single dialogue in a
    one-element list). Answers ``{"dialogues": [{"id", "utterances": [{"speaker", "text",
    "predicted_emotion", "emotion_scores": {label: probability}}]}]}``.
``POST /v1/conversations``
    Body empty, ``{}`` or ``{"utterances": [...]}``. Answers 201 ``{"id", "utterances": [...]}``
    with a prediction per initial utterance.
``POST /v1/conversations/{id}/utterances``
    Body ``{"speaker", "text"}``: the next utterance, predicted from the history the server keeps.
    Answers ``{"conversation_id", "index", "speaker", "text", "predicted_emotion", "emotion_scores"}``.
``GET /v1/conversations/{id}``, ``DELETE /v1/conversations/{id}`` (204)
    The utterances with the predictions made when each was added; forget it.
``GET /v1/labels``, ``GET /healthz``

Every utterance is predicted from its history only (the utterances before it), so a
conversation's predictions never change as it grows, and the newest turn of a conversation gets
what ``/v1/predict`` gives for the last utterance of the same dialogue. Conversations live in a
bounded store (count, idle time, utterances each; least recently used evicted) and are lost when
the server stops.

Every error is ``{"error": {"code": ..., "message": ..., "field": ...}}`` (``field`` when one
field is at fault, e.g. ``dialogues[0].utterances[2].text``):

====  ===========================================================================================
400   ``malformed_json``: the body is not UTF-8 JSON
404   ``unknown_conversation`` (never created, deleted, expired or evicted), ``not_found``
409   ``conversation_full``: the conversation has ``max_conversation_utterances`` utterances
413   ``body_too_large``: over ``max_body_bytes``, counted as the body arrives
422   ``invalid_request`` (wrong type, missing or empty field), ``too_many_dialogues``,
      ``too_many_utterances``, ``utterance_too_long``, ``speaker_too_long``, ``not_predictable``
      (the model's prompt cannot hold the utterance)
500   ``model_error``: the model failed on this request (other requests are unaffected)
503   ``overloaded``: more than ``max_pending`` utterances are waiting; retry later
====  ===========================================================================================

Requests that arrive together are predicted in one model call (:mod:`.batching`). The server
binds 127.0.0.1 unless told otherwise, takes no file paths from requests and never runs a
model's remote code on a request's behalf.
"""

from instructerc.service.config import ServiceConfig

__all__ = ["ServiceConfig"]
