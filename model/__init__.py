"""The networks only: MCFF-L presets, blocks, paths, heads, deploy head and profile; pretrained-encoder teachers."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ info lines drown the useful output
# TensorFlow turns its oneDNN kernels on only for CPUs with AVX-512/AMX; on an AVX2-only CPU they still make a
# student training step 1.8x faster (7.5 s -> 4.2 s, batch 4 at 256^2, 2 cores). Must be set before TF loads.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

from .layers import (AttentionGate, BilinearUpsample, CrackProbability, CropLike, InstanceNorm, PadToMultiple,
                     TemperatureSoftmax)
from .network import (HEADS, NUM_CLASSES, PRESETS, Preset, build_logits_model, build_model, copy_weights,
                      deploy_model, infer_preset, interpolate_weights, logits_model_of, resolve_preset, with_heads)
from .profile import count_flops, profile
from .teachers import TEACHERS, TeacherPreset, is_teacher, load_encoder_weights, pretrained_facts

__all__ = ["AttentionGate", "BilinearUpsample", "CropLike", "PadToMultiple", "CrackProbability", "InstanceNorm",
           "TemperatureSoftmax", "HEADS", "NUM_CLASSES", "PRESETS", "Preset", "build_logits_model", "build_model",
           "copy_weights", "deploy_model", "infer_preset", "interpolate_weights", "logits_model_of", "resolve_preset",
           "with_heads", "count_flops", "profile", "TEACHERS", "TeacherPreset", "is_teacher", "load_encoder_weights",
           "pretrained_facts"]
