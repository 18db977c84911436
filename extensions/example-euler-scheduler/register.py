"""Euler on Karras sigmas as a diffusers-style scheduler class, registered here and imported from
scheduler.py only when it first runs, so that importing torch and diffusers does not slow Kiri's start."""


def register(kiri) -> None:
    kiri.add_sampler("Euler Karras (example scheduler)", scheduler=kiri.later("scheduler.py:ExampleEulerKarrasScheduler"),
                     fits={"epsilon", "v_prediction"})
