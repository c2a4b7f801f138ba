"""Running models: the task table (`tasks`), execution plans and precision (`execution`), tiled inference
(`tiling`) and the description of the machine a figure was measured on (`machine`)."""
