"""Autoencoder architectures, the checkpoint format, data, training and evaluation.

This package never imports the web service (`app`); the service imports it.
"""
