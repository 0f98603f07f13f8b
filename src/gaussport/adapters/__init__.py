"""Adapters to the tools users already run (k-diffusion, EDM, diffusers).

Each adapter module imports its third-party package lazily, inside the module; this package
imports nothing third-party, so ``import gaussport`` stays light.
"""
