"""The web service: FastAPI routes over a registry of trained autoencoders."""
