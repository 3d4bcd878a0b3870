"""What the scripts share: config, data, losses, metrics, training, distillation, engines, export, streaming.

The edge-side modules (engines, measure, stream, viz) never import TensorFlow at import time.
"""
