"""Console commands of the skipclick package (their entry points are in setup.py)."""
