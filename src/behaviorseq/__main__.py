"""``python -m behaviorseq ...``: the same CLI as the ``behaviorseq`` command (e.g. where the package is on
PYTHONPATH but not installed)."""

from behaviorseq.cli import main

if __name__ == "__main__":
    main()
