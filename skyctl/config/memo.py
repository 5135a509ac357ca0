"""Parsed config documents, remembered so that a warm call reads its config without PyYAML.

A parsed document is remembered in this process (the CLI reads its config
more than once) and as JSON in the private runtime directory beside the kept
connections' sockets (:mod:`skyctl.runtime`), keyed by the file's path and
checked against the sha256 of its text: a warm ``skyctl run`` then skips
importing PyYAML (~20 ms of every call's start). Only what JSON gives back
unchanged is remembered; validation always runs on the document, so messages
do not change.

Standard library and ``skyctl.runtime`` only.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
from typing import Any, Callable

from skyctl import runtime

__all__ = ["DOCUMENTS", "Documents"]


class Documents:
    """Parsed config documents, remembered as JSON by file path and checked by the text's sha256.

    In this process (the CLI reads its config more than once) and in a file
    ``config-<hash of the path>.json`` in the private runtime directory (the
    kept connections' one: ours, a real directory, mode 0700; when it is not
    usable nothing is remembered on disk). Only a document that JSON gives
    back equal (so no dates, non-string keys, NaN) is remembered.
    """

    def __init__(self) -> None:
        self._here: dict[str, str] = {}

    def load(self, text: str, path: pathlib.Path | None, parse: Callable[[str], Any]) -> Any:
        """The document of ``text``: the remembered one, else ``parse(text)`` (remembered when JSON holds it)."""
        digest = _sha256(text)
        dumped = self._here.get(digest)
        file = None  # an in-process hit does no file-system work
        if dumped is None and path is not None:
            file = runtime.memo(f"config-{_sha256(os.path.abspath(path))[:32]}.json")
            dumped = self._entry(runtime.recall(file), digest)
        if dumped is not None:
            self._here[digest] = dumped
            return json.loads(dumped)
        document = parse(text)
        try:
            dumped = json.dumps(document, allow_nan=False)
            if json.loads(dumped) != document:
                return document
        except (TypeError, ValueError):
            return document
        self._here[digest] = dumped
        runtime.remember(file, json.dumps({"sha256": digest, "document": dumped}).encode())
        return document

    @staticmethod
    def _entry(data: bytes | None, digest: str) -> str | None:
        """The remembered document in ``data``, if it is the one of the text whose sha256 is ``digest``."""
        if data is None:
            return None
        try:
            entry = json.loads(data)
        except ValueError:
            return None
        if isinstance(entry, dict) and entry.get("sha256") == digest and isinstance(entry.get("document"), str):
            document: str = entry["document"]
            return document
        return None


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


#: the documents of this process
DOCUMENTS = Documents()
