from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
version = {}
exec((here / "isegm" / "__init__.py").read_text(), version)

setup(
    name="skipclick",
    version=version["__version__"],
    description="Click-based interactive segmentation with late-fusion models (SkipClick) in pure PyTorch",
    long_description=(here / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
    packages=find_packages(include=["isegm", "isegm.*"]),
    package_data={"isegm.app": ["static/*"]},   # the annotation page
    install_requires=[line.split("#")[0].strip() for line in (here / "requirements.txt").read_text().splitlines()
                      if line.split("#")[0].strip()],
    # baselines: the random-walker predictor; scipy reads SBD's .mat files; train: TensorBoard
    # logs (the trainer writes JSON-lines scalars without it). dev runs every test: selenium
    # drives Chromium in the annotation app's browser test, pycocotools checks our RLE format.
    # The annotation app itself needs nothing beyond the runtime requirements.
    extras_require={"baselines": ["scikit-image"], "sbd": ["scipy"], "train": ["tensorboard"],
                    "dev": ["pytest>=7", "scikit-image", "scipy", "tensorboard", "selenium>=4.11", "pycocotools"]},
    entry_points={"console_scripts": ["skipclick-app = isegm.app.__main__:main"]},
)
