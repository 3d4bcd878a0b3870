"""Print the profile of presets: ``python -m model [PRESET ...] [--size 448]``."""
from __future__ import annotations

import argparse


def main() -> None:
    from . import PRESETS, build_model, profile

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("presets", nargs="*", default=list(PRESETS), help=f"any of {', '.join(PRESETS)}")
    parser.add_argument("--size", type=int, default=448, help="square input size for FLOPs (multiple of 4)")
    args = parser.parse_args()
    print(f"{'preset':12s}{'width':>6s}{'blocks':>7s}{'params':>13s}{'GFLOP':>9s}{'weights MiB':>12s}"
          f"{'activations MiB':>16s}")
    for name in args.presets:
        if name not in PRESETS:
            parser.error(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
        info = profile(build_model(name, args.size), args.size)
        p = PRESETS[name]
        print(f"{name:12s}{p.width:6d}{p.blocks:7d}{info['params']:13,d}{info['gflops']:9.2f}"
              f"{info['weights_mib']:12.2f}{info['activations_mib']:16.1f}")


if __name__ == "__main__":
    main()
