"""What the diffusers modules share: prediction-type names, config access, flow-matching detection."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["PREDICTION_TYPES", "prediction_of", "config_get", "is_flow_scheduler", "is_flow_config"]

# diffusers' names -> gaussport's (schedules.PREDICTION_ALIASES); FlowMatch models predict velocity.
PREDICTION_TYPES = {"epsilon": "epsilon", "v_prediction": "v", "sample": "x0", "flow_prediction": "flow"}


def prediction_of(prediction_type: str) -> str:
    """gaussport's name of a diffusers ``prediction_type``.

    Raises:
        ValueError: for a prediction type the adapters do not support.
    """
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(
            f"unsupported prediction_type {prediction_type!r}; gaussport's diffusers adapters support "
            f"{', '.join(map(repr, PREDICTION_TYPES))} (FlowMatch schedulers imply 'flow_prediction'). Set "
            "prediction_type to what the model was trained to predict (it is in the scheduler config of the "
            "checkpoint)."
        )
    return PREDICTION_TYPES[prediction_type]


def config_get(obj: Any, key: str, default: Any = None) -> Any:
    """``obj.config[key]`` of a diffusers object (a dict or an attribute config), else ``default``."""
    config = getattr(obj, "config", None)
    if config is None:
        return default
    if isinstance(config, dict):
        return config.get(key, default)
    return getattr(config, key, default)


def is_flow_scheduler(scheduler: Any) -> bool:
    """Whether a scheduler instance integrates a flow-matching (rectified-flow) model."""
    name = type(scheduler).__name__
    return (
        name.startswith("FlowMatch")
        or bool(config_get(scheduler, "use_flow_sigmas", False))
        or config_get(scheduler, "prediction_type") == "flow_prediction"
    )


def is_flow_config(config: Mapping[str, Any]) -> bool:
    """Whether a scheduler config (a ``from_config`` argument) is a FlowMatch scheduler's."""
    return str(config.get("_class_name", "")).startswith("FlowMatch") or (
        "shift" in config and "beta_start" not in config and "prediction_type" not in config
    )
