"""``python -m harvester``: the same as the ``harvester`` command."""

from harvester.cli import main

if __name__ == "__main__":
    main()
