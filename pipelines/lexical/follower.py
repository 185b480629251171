"""Lexical indexes brought up to date: once for a CLI search, continuously in the query service.

`open_lexical` starts from the newest snapshot beside the lake and reads what came after it.
`LexicalIndexes` (one per serve replica) follows every index a search named, each in a thread
of its own that refreshes every `search.refresh_s`; until an index's first build is done,
`get` answers None and a hybrid search ranks by vectors alone. A lake that does not answer is
logged once per outage in a sentence; the index serves what it has meanwhile and says how far
behind it is (`lag`).
"""

from __future__ import annotations

import logging
import threading
import time

from pipelines.config import EmbedworkerSettings
from pipelines.lexical.analyzer import KoreanEnglishAnalyzer
from pipelines.lexical.index import LexicalIndex
from pipelines.maintenance.lake_admin import LakeError

log = logging.getLogger("embedworker.lexical")


def open_lexical(settings: EmbedworkerSettings, index: str, say=lambda message: None) -> LexicalIndex:
    """The index at the lake's newest version (from the newest snapshot if any; saves a new one
    when it read a lot since: `LexicalIndex.save_due`). `say` hears, in a sentence, that a first
    build from the whole lake is starting (minutes for a large lake). Raises LakeError."""
    lexical = LexicalIndex(settings, index)
    if lexical.load_snapshot() is None and lexical.feed.latest_version() is not None:
        say(f"building the lexical index of {index} from the lake (once: it is saved beside the lake "
            "for the next searches)")
    if lexical.refresh() and lexical.save_due():
        lexical.save_snapshot()
    return lexical


class LexicalIndexes:
    """The lexical indexes a query-service replica searches. Cheap to construct; threads start
    on the first `get` of an index; `close()` stops them."""

    def __init__(self, settings: EmbedworkerSettings, on_refresh=lambda index, ok: None):
        """`on_refresh(index, ok)` hears each read of the lake (the service counts them)."""
        self.settings = settings
        self.on_refresh = on_refresh
        self._indexes: dict[str, LexicalIndex] = {}
        self._checked: dict[str, float] = {}  # index -> when it was last seen at the lake's newest version
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.analyzer = KoreanEnglishAnalyzer()  # one Kiwi model for every index of the replica

    def get(self, index: str) -> LexicalIndex | None:
        """The index if it has been built once, else None (and it starts being followed)."""
        with self._lock:
            lexical = self._indexes.get(index)
            if lexical is None:
                lexical = self._indexes[index] = LexicalIndex(self.settings, index, self.analyzer)
                threading.Thread(target=self._follow, args=(lexical,), name=f"lexical-{index}", daemon=True).start()
        return lexical if lexical.version is not None else None

    def lag(self) -> dict[str, dict]:
        """Per followed index: the lake version it searches, documents, and the seconds since it
        was last known to hold the lake's newest version (None before its first build)."""
        now = time.monotonic()
        return {name: {"version": ix.version, "documents": ix.documents,
                       "lag_s": round(now - self._checked[name], 1) if name in self._checked else None}
                for name, ix in list(self._indexes.items())}

    def close(self) -> None:
        self._stop.set()

    def _follow(self, lexical: LexicalIndex) -> None:
        failing = False
        try:
            lexical.load_snapshot()
        except (LakeError, OSError) as exc:
            log.warning("could not read the lexical snapshot of %s (%s); building it from the lake", lexical.index, exc)
        while not self._stop.is_set():
            try:
                lexical.refresh()
                self._checked[lexical.index] = time.monotonic()
                self.on_refresh(lexical.index, True)
                if lexical.save_due():
                    lexical.save_snapshot()
                if failing:
                    log.info("the lake answers again: the lexical index of %s is at version %s",
                             lexical.index, lexical.version)
                failing = False
            except Exception as exc:  # noqa: BLE001 - the thread lives on: the index keeps serving what it has
                if not failing:
                    log.warning("the lexical index of %s cannot read the lake (%s: %s); it serves version %s "
                                "until the lake answers", lexical.index, type(exc).__name__, exc, lexical.version,
                                exc_info=not isinstance(exc, (LakeError, OSError)))
                failing = True
                self.on_refresh(lexical.index, False)
            self._stop.wait(self.settings.search.refresh_s)
