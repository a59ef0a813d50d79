"""``instructerc serve``: an HTTP API over a model directory.

Endpoints (the full schema is served at ``/openapi.json``, browsable at ``/docs``):

``POST /v1/predict``
    Body ``{"dialogues": [{"id": "d1", "utterances": [{"speaker": "Ann", "text": "Hi!"}, ...]}]}``,
    the user JSONL format (only the ``dialogues`` wrapper is accepted; wrap a single dialogue in a
    one-element list). Answers ``{"dialogues": [{"id", "utterances": [{"speaker", "text",
    "predicted_emotion", "emotion_scores": {label: probability}, "truncated"}]}]}`` (``id`` is
    ``null`` when the dialogue has none); a dialogue naming its dataset (``"dataset": "meld"``)
    also gets ``predicted_original_emotion`` from a unified-label model. Other keys, gold
    ``emotion`` included, are accepted but not sent back.
``POST /v1/conversations``
    Body empty, ``{}`` or ``{"utterances": [...]}``. Answers 201 ``{"id", "utterances": [...]}``
    with a prediction per initial utterance.
``POST /v1/conversations/{id}/utterances``
    Body ``{"speaker", "text"}``: the next utterance, predicted from the history the server keeps.
    Answers ``{"conversation_id", "index", "speaker", "text", "predicted_emotion", "emotion_scores",
    "truncated"}``.
``GET /v1/conversations/{id}``, ``DELETE /v1/conversations/{id}`` (204)
    The utterances with the predictions made when each was added; forget it.
``GET /v1/labels``, ``GET /healthz`` (and ``HEAD`` of every ``GET``: its status and headers)

Every utterance is predicted from its history only (the utterances before it), so a
conversation's predictions never change as it grows, and the newest turn of a conversation gets
what ``/v1/predict`` gives for the last utterance of the same dialogue. Conversations live in a
bounded store (count, idle time, utterances each; least recently used evicted) and are lost when
the server stops.

Every error is ``{"error": {"code": ..., "message": ..., "field": ...}}`` (``field`` when one
field is at fault, e.g. ``dialogues[0].utterances[2].text``):

====  ===========================================================================================
400   ``malformed_json``: the body is not JSON in its declared charset (UTF-8 by default; a byte
      order mark is honoured) or in its ``Content-Encoding``, or nests deeper than 64 levels;
      ``malformed_request``: not valid HTTP/1.1 (a request line, header or chunk; no ``Host``);
      ``host_not_allowed``: the ``Host`` is not an allowed name (``--allowed-host``)
403   ``cross_origin_refused``: a browser request from another web origin (``--allow-origin``)
404   ``unknown_conversation`` (never created, deleted, expired, evicted or lost in a restart), ``not_found``
405   ``method_not_allowed``: a path that exists, with a method it does not answer
408   ``request_timeout``: the body did not arrive within ``request_timeout_seconds``
409   ``conversation_full``: the conversation has ``max_conversation_utterances`` utterances
413   ``body_too_large``: over ``max_body_bytes``, counted as the body arrives
415   ``unsupported_media_type``: a body not sent as ``Content-Type: application/json``, or in a
      charset or content coding (other than gzip and deflate, at most 4) the service cannot read
422   ``invalid_request`` (wrong type, missing or empty field, a lone surrogate or NUL, a number
      over 100 characters or not finite), ``too_many_dialogues``, ``too_many_utterances``,
      ``utterance_too_long``, ``speaker_too_long``, ``not_predictable`` (the prompt's fixed
      wording alone is over the model's budget; a long utterance is cut instead, ``truncated``)
429   ``too_many_new_conversations``: conversations are created faster than allowed
500   ``model_error``: the model failed on this request (other requests are unaffected);
      ``internal_error``: a fault of the service itself (logged once, with the request id)
503   ``overloaded``: more than ``max_pending`` utterances are waiting (or waiting for their
      conversation), or more than ``max_connections`` connections are open; ``conversations_full``: every stored conversation is in use;
      ``unavailable``: the batching worker has died (``/healthz`` answers 503 too)
====  ===========================================================================================

Every answer carries an ``X-Request-ID`` header (the client's own, when it sends a short plain
one), and every log line written for a request names it.

Requests that arrive together are predicted in one model call (:mod:`.batching`); a request
whose client has gone is dropped before its model call. The server binds 127.0.0.1 unless told
otherwise, answers only loopback ``Host`` names and same-origin browser requests by default
(:mod:`.guard`), takes no file paths from requests and runs a model's own code only with
``--trust-remote-code``.
"""

from instructerc.service.config import ServiceConfig

__all__ = ["ServiceConfig"]
