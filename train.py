"""``python train.py MODEL_FILE ...`` in a clone: the ``skipclick-train`` command
(``isegm/cli/train.py``; ``--help`` lists its flags)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))   # the clone's package, installed or not

from isegm.cli.console import train  # noqa: E402

if __name__ == "__main__":
    train()
