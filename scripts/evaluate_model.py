"""``python scripts/evaluate_model.py NoBRS ...`` in a clone: the ``skipclick-evaluate`` command
(``isegm/cli/evaluate.py``; ``--help`` lists its flags)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # the clone's package, installed or not

from isegm.cli.common import main_entry  # noqa: E402
from isegm.cli.evaluate import main  # noqa: E402  (importable: main(argv) returns the exit status)

if __name__ == "__main__":
    main_entry(main)
