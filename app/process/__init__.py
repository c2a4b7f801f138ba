"""The server process: `ae-serve` (`cli`), running uvicorn with workers (`server`), the guarded HTTP protocol
(`connections`), the drain on SIGTERM (`drain`) and the server verbs of the `ae` command (`commands`)."""
