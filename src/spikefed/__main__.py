"""``python -m spikefed``: the ``spikefed`` command, so that ``torchrun ... -m spikefed run`` starts a
multi-process run (docs/distributed.md)."""

from .cli import main

if __name__ == "__main__":
    main()
