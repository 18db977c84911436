"""DPM++ 2S ancestral, registered here and imported from sampler.py only when it first runs,
so that importing torch does not slow Kiri's start."""


def register(kiri) -> None:
    kiri.add_sampler("DPM++ 2S a", function=kiri.later("sampler.py:sample_dpmpp_2s_ancestral"),
                     fits={"epsilon", "v_prediction"}, aliases=("k_dpmpp_2s_a",),
                     flow=kiri.later("sampler.py:sample_dpmpp_2s_ancestral_flow"))
