"""The evaluations of the photo models, with the literature's protocols: natural-image denoising and
super-resolution (`natural`) and the photo denoisers of every noise level (`denoise`, FFDNet)."""
