"""The chaos run (`python -m bench.chaos`, docs/reliability.md): faults in a server's life against real `ae-serve`
processes. `run` holds the command line and the order of the faults; `connection_faults` and `lifecycle_faults`
the faults; `clients` and `server` the raw-connection clients and the server they drive."""

from bench.chaos.run import main

__all__ = ["main"]
