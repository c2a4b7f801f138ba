"""Measuring image quality: metrics (PSNR, SSIM, ...), classical baselines and noise-level estimation."""
