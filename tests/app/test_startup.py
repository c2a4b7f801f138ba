"""What the service's start-up leaves behind for the request path."""

from __future__ import annotations

import gc

from fastapi.testclient import TestClient


def test_start_up_freezes_what_it_built_out_of_the_garbage_collectors_sight(client: TestClient) -> None:
    # The session's app has started (the fixture ran its lifespan): the models and the rest are frozen.
    assert client.get("/readyz").status_code == 200
    assert gc.get_freeze_count() > 0
