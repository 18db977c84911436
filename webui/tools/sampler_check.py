"""Check samplers against the analytic model: `python -m webui.tools.sampler_check [NAME ...]`.

Runs every registered sampler (built-in and from extensions, loaded the way Kiri loads them) on
the ideal denoiser of a known Gaussian mixture and prints how far each lands from the true
distribution at several step counts, with a log-log plot. Each sampler runs on every model kind it
fits: noise (epsilon), v and flow prediction (`--prediction flow --shift 3` for SD3's schedule).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def build_registry(extensions_dir: Path | None):
    """Built-in samplers and the user's extensions, through the same loader Kiri uses at start."""
    from webui.bootstrap import build_registries
    from webui.engine.settings import BUILTIN_EXTENSIONS
    from webui.extensions import ExtensionManager

    registries = build_registries()
    roots = [(BUILTIN_EXTENSIONS, "built-in")]
    if extensions_dir is not None:
        roots.append((extensions_dir, "user"))
    for info in ExtensionManager(registries).load_all(roots, set()):
        if info.status == "error":
            print(f"extension {info.name} failed to load: {info.error}")
    return registries.samplers


def main(argv: list[str] | None = None) -> int:
    from webui.engine.samplers.check import DEFAULT_SAMPLES, PREDICTIONS, STEPS

    p = argparse.ArgumentParser(prog="python -m webui.tools.sampler_check", description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", metavar="NAME", help="samplers to check (default: all registered)")
    p.add_argument("--steps", nargs="+", type=int, default=list(STEPS), help="step counts")
    p.add_argument("--prediction", nargs="+", choices=PREDICTIONS, default=list(PREDICTIONS), help="model parameterisations")
    p.add_argument("--samples", type=int, default=DEFAULT_SAMPLES, help="samples per run (the noise floor falls as 1/sqrt)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--schedule", default="Automatic", help="schedule type (Automatic, Karras, ...)")
    p.add_argument("--shift", type=float, default=1.0, help="flow models' timestep shift (SD3: 3.0, Flux/kiri-shapes-dit: 1.0)")
    p.add_argument("--out", type=Path, default=Path("sampler_check.png"), help="where to write the plot")
    p.add_argument("--extensions-dir", type=Path, default=ROOT / "extensions", help="user extensions to load too")
    p.add_argument("--threads", type=int, default=1, help="torch threads (tiny tensors: more threads only add overhead)")
    args = p.parse_args(argv)
    if any(s < 1 for s in args.steps) or args.samples < 2:
        p.error("steps must be >= 1 and samples >= 2")
    logging.basicConfig(level=logging.WARNING)

    import torch

    from webui.engine.samplers.check import check_samplers, render_plot, render_table

    from diffusers.utils import logging as diffusers_logging

    torch.set_num_threads(args.threads)
    diffusers_logging.set_verbosity_error()  # "config attributes ... ignored" once per run drowns the table
    registry = build_registry(args.extensions_dir if args.extensions_dir and args.extensions_dir.is_dir() else None)
    start = time.perf_counter()
    rows = check_samplers(registry, args.names or None, args.prediction, args.steps, args.samples, args.seed, args.schedule,
                          shift=args.shift)
    print(render_table(rows))
    path = render_plot(rows, args.out)
    print(f"\n{len(rows) - 1} runs in {time.perf_counter() - start:.1f} s; plot written to {path.resolve()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
