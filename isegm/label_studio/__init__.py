"""SkipClick and EMC-Click as a Label Studio ML backend (``skipclick-label-studio``).

Smart keypoints placed in Label Studio become clicks; the answer is a ``BrushLabels`` mask.
``protocol``: the labeling config, the request's context and the result; ``rle``: Label
Studio's brush RLE; ``images``: a task's image from its URL; ``segmenter``: the model with a
per-image feature cache (``isegm.Predictor``); ``server``: the HTTP protocol; ``auth``: the
basic auth Label Studio's model connection sends.
"""
