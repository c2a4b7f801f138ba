"""Training on photographs: the natural-image recipes (`natural`: Train400, T91), the photo denoiser of every
noise level (`denoise`, FFDNet) and the residual super-resolver (`super_resolution`), with what they share:
their recipes and patch sampler (`recipes`), resumable state (`state`), validation during training
(`validation`) and the card and figures a run writes (`card`)."""
