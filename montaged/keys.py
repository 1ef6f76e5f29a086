"""The one way Montage names a stored result: a short stable hash of what produced it.

Stage results, cached transcripts (Whisper and Deepgram) and the whisper pool's own cache all key
on this, so "same inputs, same key" holds in one place: parts are JSON-encoded with sorted keys
(dict order never changes a key) and anything JSON cannot encode by itself is encoded as ``str``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def param_key(*parts: Any) -> str:
    """A short stable hash of the parameters that produce a stored result."""
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:24]
