"""`python -m bench.soak`: the soak run (bench.soak.run)."""

from bench.soak.run import main

if __name__ == "__main__":
    raise SystemExit(main())
