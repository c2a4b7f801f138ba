"""The service layer, with nothing of HTTP, in three layers under the service (`service`) and its start-up
(`startup`): `requests/` (what a request asks and gets back, its inputs checked, the conditional VAEs' requests,
latent maps, what /v1/models says), `models/` (the catalogue of checkpoints, loading, the runtime, the registry,
hot swaps, default models and model choice) and `scheduling/` (dynamic batching and CPU work off the event loop)."""
