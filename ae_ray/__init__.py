"""The service on Ray Serve: the same FastAPI app as `uvicorn app.main:app`, with the models in deployments
of their own that scale apart from the HTTP front.

    pip install -e ".[ray]"
    serve run deploy/ray/serve.yaml                      # one machine: Ray starts itself
    serve run ae_ray.application:build_app               # the same, with the defaults of ae_ray.options

Modules:
- `ae_ray.options`: the Ray-side settings (`AE_RAY_*`): how checkpoints are grouped into deployments, replicas,
  CPUs/GPUs per replica, the multiplexing LRU and the batching inside a replica.
- `ae_ray.model_group`: the `ModelGroup` deployment: a replica runs the project's own registry (sha256-checked
  safetensors, one worker thread and batcher per model) for the checkpoints of its group, multiplexed.
- `ae_ray.gateway`: the `Gateway` ingress deployment: `app.application.create_app` built inside the replica, whose
  registry sends each forward pass to the model's group through a deployment handle.
- `ae_ray.application`: `build_app`, the application builder that `serve run` / `serve deploy` import.

Nothing here is imported by `app/` or `models/`: the plain service installs and runs without Ray.
"""
