"""`python -m bench.chaos`: the chaos run (bench.chaos.run)."""

from bench.chaos.run import main

if __name__ == "__main__":
    main()
