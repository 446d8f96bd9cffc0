"""``python scripts/make_tables.py RESULTS.json ...`` in a clone: the ``skipclick-tables`` command
(``isegm/cli/tables.py``; ``--help`` lists its flags)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # the clone's package, installed or not

from isegm.cli.common import main_entry  # noqa: E402
from isegm.cli.tables import main  # noqa: E402  (importable: main(argv) returns the exit status)

if __name__ == "__main__":
    main_entry(main)
