"""What the scripts share: config, data, losses, metrics, training, distillation, engines, export, streaming.

The edge-side modules (engines, measure, stream, viz) never import TensorFlow at import time.
"""
import os

# Before TensorFlow loads (the scripts import crackseg first): see model/__init__.py.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
