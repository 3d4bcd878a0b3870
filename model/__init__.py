"""The MCFF-L network only: presets, blocks, paths, heads, deploy head and profile."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ info lines drown the useful output

from .layers import AttentionGate, CrackProbability, InstanceNorm, TemperatureSoftmax
from .network import (HEADS, NUM_CLASSES, PRESETS, Preset, build_logits_model, build_model, deploy_model,
                      infer_preset, resolve_preset, with_heads)
from .profile import count_flops, profile

__all__ = ["AttentionGate", "CrackProbability", "InstanceNorm", "TemperatureSoftmax", "HEADS", "NUM_CLASSES",
           "PRESETS", "Preset", "build_logits_model", "build_model", "deploy_model", "infer_preset",
           "resolve_preset", "with_heads", "count_flops", "profile"]
