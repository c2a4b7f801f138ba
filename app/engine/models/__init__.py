"""The served models: the catalogue of checkpoints (`catalogue`), loading one (`loading`), where they run
(`runtime`), the registry over both (`registry`), replacing one in place (`hot_swap`), and which model a request
means (`defaults`, `model_choice`). Builds on `app.engine.scheduling`; knows nothing of requests or HTTP."""
