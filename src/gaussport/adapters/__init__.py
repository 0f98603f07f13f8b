"""Adapters to the tools users already run: k-diffusion, its front-ends, EDM, diffusers, flow matching.

* :mod:`gaussport.adapters.k_diffusion` -- ``sample_<solver>`` functions with k-diffusion's exact
  sampler signature (for k-diffusion callers, AUTOMATIC1111 and ComfyUI), ``as_k_diffusion_sampler``
  and :class:`~gaussport.adapters.k_diffusion.KDiffusionDenoiser`;
* :mod:`gaussport.adapters.edm` -- EDM-interface networks (``round_sigma`` on the whole grid, class
  labels) and ``edm_sample``;
* :mod:`gaussport.adapters.diffusers` -- ``DiffusersDenoiser``, the ``GaussportScheduler`` for
  unmodified pipelines, latent statistics (``fit_latent_gaussian``);
* :mod:`gaussport.adapters.flow` -- rectified-flow models (SD3/Flux), including the teleport from
  pure noise (``t = 1``);
* :mod:`gaussport.adapters.guidance` -- classifier-free guidance as a denoiser, per-class Gaussians.

Each adapter module imports its third-party package lazily (diffusers on first use of the scheduler;
k-diffusion never); this package imports nothing third-party, so ``import gaussport.adapters`` and
every submodule import stay light. docs/adapters.md has the walk-through.
"""
