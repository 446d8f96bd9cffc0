"""ONNX deployment: ``export`` writes a model as ``encoder.onnx`` + ``decoder.onnx`` + ``meta.json``
(needs torch), ``engine`` runs such a folder on onnxruntime alone (no torch import)."""
