"""One router per resource: health, models, images (denoise, super-resolve, reconstruct), embeddings, vae."""
