"""``python scripts/evaluate_model.py NoBRS ...`` in a clone: the ``skipclick-evaluate`` command
(``isegm/cli/evaluate.py``; ``--help`` lists its flags)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # the clone's package, installed or not

from isegm.cli.console import evaluate  # noqa: E402

if __name__ == "__main__":
    evaluate()
