import re
from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
# The one place of the version is isegm/__init__.py; read as text so that building needs no torch.
version = re.search(r'^__version__ = "([^"]+)"', (here / "isegm" / "__init__.py").read_text(), re.M).group(1)

setup(
    name="skipclick",
    version=version,
    description="Click-based interactive segmentation with late-fusion models (SkipClick) in pure PyTorch",
    long_description=(here / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
    packages=find_packages(include=["isegm", "isegm.*"]),
    # Read at run time: the annotation page, and the config defaults used when no config file is found.
    package_data={"isegm.app": ["static/*"], "isegm.utils": ["config_defaults.yml"]},
    install_requires=[line.split("#")[0].strip() for line in (here / "requirements.txt").read_text().splitlines()
                      if line.split("#")[0].strip()],
    # baselines: the random-walker predictor; scipy reads SBD's .mat files; train: TensorBoard
    # logs (the trainer writes JSON-lines scalars without it); onnx: the export and onnxruntime
    # predictor. dev runs every test: selenium drives Chromium in the annotation app's browser
    # test, pycocotools checks our RLE format. The annotation app itself needs nothing beyond the
    # runtime requirements.
    extras_require={"baselines": ["scikit-image"], "sbd": ["scipy"], "train": ["tensorboard"],
                    "onnx": ["onnx", "onnxruntime"],
                    "dev": ["pytest>=7", "scikit-image", "scipy", "tensorboard", "selenium>=4.11", "pycocotools",
                            "onnx", "onnxruntime"]},
    entry_points={"console_scripts": [
        "skipclick-train = isegm.cli.console:train",
        "skipclick-evaluate = isegm.cli.console:evaluate",
        "skipclick-tables = isegm.cli.console:tables",
        "skipclick-app = isegm.cli.console:app",
        "skipclick-export = isegm.cli.console:export",
        "skipclick-weights = isegm.cli.console:weights",
        "skipclick-label-studio = isegm.cli.console:label_studio",
    ]},
)
