"""`docs/model-report.md`, rendered from the metrics in the model cards (`model_report`), with its sections on
the photo denoisers (`photo_denoise`) and on a continued photo model's learning curve (`learning_curve`)."""
