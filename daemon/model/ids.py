"""Identifier types: each ID gets its own type so that a run key is never passed where an event id goes."""

from typing import NewType

#: Deterministic key of a run: rule + dataset snapshot fingerprint, or rule + schedule slot.
RunKey = NewType("RunKey", str)
#: Deterministic id of a source event: bucket/key/etag or path/size/mtime, hashed.
EventId = NewType("EventId", str)
#: Name of a rule, unique across all rule files.
RuleName = NewType("RuleName", str)
