"""What the service knows of one HTTP request while it is served: one typed record per request.

The request pipeline (app.http.middleware) creates it when a request arrives and keeps it in the ASGI scope's
state under one key; admission control (app.http.admission) hangs its ticket on it; the service, through the
`Accounting` interface it is built with, tells it which model serves the request and how many images it
holds; the error handlers (app.http.error_handlers) note the error type. The pipeline reads it back for the access
log line and the metrics. Nothing else about a request is kept in `scope["state"]`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from starlette.types import Scope

RECORD_KEY = "ae_request"  # the one key of scope["state"] (request.state) this service writes


class AdmissionTicket(Protocol):
    """An admitted request's place in admission control's counts (app.http.admission.Ticket)."""

    def move_to(self, model: str) -> None: ...


@dataclass(slots=True)
class RequestRecord:
    """One request's facts: written where they become known, read once for the log line and the metrics."""

    request_id: str = ""
    model: str | None = None  # the model that serves it, once the service has chosen it
    images: int | None = None  # images (or latents, steps, samples) it holds
    error_type: str | None = None  # the error it was answered with, if any
    refused_at_admission: bool = False  # refused by admission control before its body was read
    client_disconnected: bool = False  # the client went away before its answer was sent
    ticket: AdmissionTicket | None = None  # its place in admission control's counts, if admitted there

    def serving(self, model: str, images: int) -> None:
        """Accounting: count the request against `model` (may raise Overloaded) and note it for the log."""
        if self.ticket is not None:
            self.ticket.move_to(model)
        self.model = model
        self.images = images


def record_of(scope: Scope) -> RequestRecord:
    """The request's record; one is created where the request did not come through the pipeline (tests of a
    route alone), so that every writer finds one."""
    state: dict[str, Any] = scope.setdefault("state", {})
    record = state.get(RECORD_KEY)
    if record is None:
        record = state[RECORD_KEY] = RequestRecord()
    return record
