"""``python -m labelfix``: the same command line as ``labelfix``."""

from labelfix.cli import main

if __name__ == "__main__":
    main(prog_name="labelfix")
