"""The evaluations of the MNIST models: denoising (`denoise`), super-resolution (`super_resolution`),
embeddings and reconstructions (`embedding`), VAE likelihoods (`vae`), generated digits and the classifier
(`sample_quality`), and the figures they draw (`figures`)."""
