"""What /v1/models says of one checkpoint: its state, its card and how it runs (the one place a ModelInfo is made)."""

from __future__ import annotations

from app.engine.models.catalogue import ModelEntry
from app.engine.models.registry import ModelRegistry
from app.http.schemas import InputSpecInfo, ModelInfo
from models.runtime.tasks import model_takes


def describe_model(entry: ModelEntry, registry: ModelRegistry, owned_by: str) -> ModelInfo:
    card, running = entry.card, registry.describe(entry)
    spec = card.input if card else None
    trained_at = card.trained_at() if card else None
    return ModelInfo(
        # OpenAI's model object, so that OpenAI clients can list the models (`created`: 0 when the card
        # does not say when its weights were trained)
        id=entry.name,
        created=int(trained_at.timestamp()) if trained_at else 0,
        owned_by=owned_by,
        name=entry.name,
        state=entry.state,
        reason=entry.reason,
        tasks=card.tasks if card else [],
        architecture=card.architecture if card else None,
        input=InputSpecInfo(channels=spec.channels, height=spec.height, width=spec.width, domain=spec.domain)
        if spec
        else None,
        latent_size=card.latent_size if card else None,
        labels=list(range(count)) if card and (count := model_takes(card).labels) else None,
        scale=card.scale if card else None,
        device=running.device if running else str(registry.device),
        dtype=running.dtype if running else None,
        execution=running.execution if running else None,
        description=card.description if card else "",
        sha256=card.weights_sha256 if card else None,
        metrics=card.metrics if card else {},
        training=card.training if card else {},
    )
