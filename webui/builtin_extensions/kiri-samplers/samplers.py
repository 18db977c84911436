"""Kiri's own samplers, registered through the same API every extension uses."""

from webui.engine.samplers.registry import BUILTIN_SAMPLERS


def register(kiri) -> None:
    for sampler in BUILTIN_SAMPLERS:
        kiri.add_sampler(sampler.name, scheduler=sampler.scheduler, function=sampler.function, options=sampler.options,
                         fits=sampler.fits, aliases=sampler.aliases, flow=sampler.flow)
