"""Training: the generic loop, one module per pipeline, one `finish()`, and the command line on top.

- `loop`: `train(recipe, split, options)` for any recipe of `models.training.recipes`, and the shared types;
- `finish`: the checkpoint folder every pipeline ends with (weights, card, samples.png, loss.png);
- `mnist`, `own_images` (a folder of your images) and `photo/` (photographs: Train400, T91, the photo
  denoisers and super-resolvers): the pipelines;
- `cli`: `python -m models.train`, which picks the pipeline.

Imports go one way, cli -> pipelines -> finish -> loop; nothing here imports the command line.
"""

from models.training.finish import finish
from models.training.loop import ImageSplit, TrainOptions, TrainResult, train, training_run
from models.training.mnist import TrainingData, run

__all__ = ["ImageSplit", "TrainOptions", "TrainResult", "TrainingData", "finish", "run", "train", "training_run"]
