"""The registry generated from the Rust core: provider descriptors, field
ids, model tables and shared constants (``registry.json``, written by
``LLMTALLY_BLESS=1 cargo test``; a test fails when it drifts)."""

from __future__ import annotations

import json
import pathlib

DATA = json.loads(pathlib.Path(__file__).with_name("registry.json").read_text(encoding="utf-8"))
FIELDS: dict[str, int] = DATA["fields"]
CONSTANTS: dict[str, int] = DATA["constants"]
