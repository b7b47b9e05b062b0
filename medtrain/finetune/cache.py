"""The feature cache: tokenized features as JSON, so a grid's runs tokenize each input file once."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from medtrain.data.tokenizer import fingerprint
from medtrain.io import sha256_file, sha256_path, write_text_atomic


class FeatureCache:
    """Keyed by the tokenizer, the encoding code (its module file), its settings and the input file.

    Writes are atomic, so runs sharing one cache folder (a grid) never see a half-written file.
    """

    def __init__(self, folder: Path, tokenizer_dir: Path, encoder_module: ModuleType, settings: dict[str, Any]):
        self.folder = folder
        self.identity = {"tokenizer": fingerprint(tokenizer_dir), "encoder": sha256_file(encoder_module.__file__),
                         **settings}

    def get(self, source: Path, build: Callable[[], Any]) -> Any:
        key = json.dumps({**self.identity, "source": sha256_path(source)}, sort_keys=True)
        path = self.folder / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
        data = build()
        write_text_atomic(path, json.dumps(data, separators=(",", ":")))
        return data
