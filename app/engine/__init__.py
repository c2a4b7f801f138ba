"""The service layer, with nothing of HTTP: the model registry, model choice, jobs, batching, CPU work
off the event loop and the service that runs a task on a model."""
