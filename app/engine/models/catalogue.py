"""The model catalogue: which checkpoints exist, their cards, and each one's state.

`scan()` reads every `<checkpoints_dir>/<name>/config.json` (folders named as `models.checkpoint` allows);
`verify()` checks a weights file's sha256 against its card without loading it. Each weights file is hashed
once at start-up: those of the models loaded then (preloaded and default ones) as they load, the others by
`verify()`. A checkpoint that fails is kept in the listing as *unavailable* with the reason; it never stops
the other models. Where the models run is the runtime's business (app.engine.models.runtime).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from app.engine.models.loading import LoadedModel
from app.errors import ModelNotFound
from app.settings import Settings
from models.checkpoint import (
    CARD_FILE,
    MODEL_NAME_PATTERN,
    CheckpointError,
    ModelCard,
    read_card,
    require_weights,
    verify_weights,
)

logger = logging.getLogger("app.registry")
LoadState = Literal["loaded", "not_loaded", "unavailable"]


@dataclass
class ModelEntry:
    """One checkpoint folder, whatever its state."""

    name: str
    directory: Path
    card: ModelCard | None = None  # None when config.json itself is broken
    state: LoadState = "not_loaded"
    reason: str | None = None  # why it is unavailable
    loaded: LoadedModel | None = None  # the model in this process (the local runtime's), if loaded here
    warmed_up: bool = False
    verified: bool = False  # its weights' sha256 was checked against its card (by verify() or load())
    # A thread lock, not an asyncio one: loading runs in worker threads and tests run several event loops.
    lock: threading.Lock = field(default_factory=threading.Lock)

    def mark_unavailable(self, reason: str) -> None:
        self.state = "unavailable"
        self.reason = reason
        logger.error("model %s is unavailable: %s", self.name, reason)


class ModelCatalogue:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.entries: dict[str, ModelEntry] = {}

    def scan(self) -> list[str]:
        """Read and validate the model card of every new checkpoint folder; a broken card makes its model
        unavailable with the reason. -> the names added. Weights are not read here (see verify)."""
        root = self.settings.checkpoints_dir
        if not root.is_dir():
            logger.warning("checkpoints directory %s does not exist; no models to serve", root)
            return []
        added = []
        for directory in self._checkpoint_folders(root):
            if directory.name in self.entries:
                continue
            entry = ModelEntry(name=directory.name, directory=directory)
            try:
                entry.card = read_card(directory)
            except CheckpointError as exc:
                entry.mark_unavailable(str(exc))
            self.entries[entry.name] = entry
            added.append(entry.name)
        return added

    def verify(self, names: list[str]) -> None:
        """Check each named model's weights against its card's sha256 (blocking: reads the files), unless
        that was done already or is switched off (AE_VERIFY_WEIGHTS); a mismatch makes it unavailable."""
        for name in names:
            entry = self.entry(name)
            if entry.card is None or entry.verified or entry.state == "unavailable":
                continue
            if not self.settings.verify_weights:
                continue
            try:
                verify_weights(require_weights(entry.directory), entry.card)
            except CheckpointError as exc:
                entry.mark_unavailable(str(exc))
                continue
            entry.verified = True

    @staticmethod
    def _checkpoint_folders(root: Path) -> list[Path]:
        """Folders of `root` holding a model card, named as models may be named (models.checkpoint), whose
        real path stays inside `root` (a symlink pointing elsewhere is skipped: models come from the
        checkpoints directory only)."""
        real_root = root.resolve()
        folders = []
        for directory in sorted(root.iterdir()):
            if not directory.is_dir() or not MODEL_NAME_PATTERN.match(directory.name):
                continue
            if not directory.resolve().is_relative_to(real_root) or not (directory / CARD_FILE).is_file():
                continue
            folders.append(directory)
        return folders

    async def rescan(self) -> tuple[list[str], list[str]]:
        """Pick up new checkpoint folders, forget vanished ones that are not loaded, and retry unavailable
        ones that are not loaded (a fixed checkpoint). -> (added, removed) names."""
        before = set(self.entries)
        root = self.settings.checkpoints_dir
        present = {path.name for path in self._checkpoint_folders(root)} if root.is_dir() else set()
        for name, entry in list(self.entries.items()):
            if entry.loaded is None and (name not in present or entry.state == "unavailable"):
                del self.entries[name]
        await asyncio.to_thread(lambda: self.verify(self.scan()))  # hashes weights files: off the event loop
        return sorted(set(self.entries) - before), sorted(before - set(self.entries))

    def entry(self, name: str) -> ModelEntry:
        try:
            return self.entries[name]
        except KeyError:
            known = ", ".join(sorted(self.entries)) or "none"
            raise ModelNotFound(f"no model named {name!r}; available: {known}", param="model") from None

    def refresh_card(self, entry: ModelEntry) -> None:
        """Re-read a model's card (and check its weights): a checkpoint changed in place that is not loaded.
        Raises CheckpointError and keeps the old card when the new one is broken."""
        card = read_card(entry.directory)
        if self.settings.verify_weights:
            verify_weights(require_weights(entry.directory), card)
        entry.card, entry.reason, entry.verified = card, None, self.settings.verify_weights
        if entry.state == "unavailable":  # a fixed checkpoint
            entry.state = "not_loaded"
