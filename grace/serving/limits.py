"""What a stranger may ask of the model on a public app, checked on the server.

The page's sliders and lists are no defence: ``gradio_client`` calls any handler with any value.
``check_public`` refuses, in one sentence naming the control, every encode setting the page
would not send: a longer rationale, a precision the page does not offer, a temperature of 1e300,
a no-repeat n-gram of a billion. Each bound is the page's own (``grace.ui.common.model_bar``).
"""

from __future__ import annotations

import math

from grace.model.settings import EncodeSettings

# field: (label on the page, lowest, highest); the numbers are the page's slider bounds
PUBLIC_BOUNDS: dict[str, tuple[str, float, float]] = {
    "max_new_tokens": ("Max rationale tokens", 1, 128),
    "temperature": ("Temperature", 0.05, 2.0),
    "top_p": ("Top-p", 0.05, 1.0),
    "repetition_penalty": ("Repetition penalty", 1.0, 2.0),
    "no_repeat_ngram": ("No-repeat n-gram", 0, 8),
    "layer": ("Layer", -65, 64),  # the model refuses a layer it lacks; this bounds the number itself
    "seed": ("Seed", 0, 2**31 - 1),
}
PUBLIC_DTYPES = ("float32", "auto")  # the page's Precision list (bfloat16 is chosen by 'auto' where it is fast)
WHOLE = ("max_new_tokens", "no_repeat_ngram", "layer", "seed")


def check_public(settings: EncodeSettings) -> EncodeSettings:
    """``settings`` when a public app serves them, else ``ValueError`` with one sentence naming
    the control and its range."""
    for name, (label, lo, hi) in PUBLIC_BOUNDS.items():
        value = getattr(settings, name)
        if value is None and name == "seed":
            continue  # greedy rationales need no seed
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                isinstance(value, float) and not math.isfinite(value)):
            raise ValueError(f"{label} must be a finite number on this public app, not {str(value)[:40]!r}.")
        if name in WHOLE and value != int(value):
            raise ValueError(f"{label} must be a whole number on this public app.")
        if not lo <= value <= hi:
            raise ValueError(f"{label} must be from {lo:g} to {hi:g} on this public app ({_brief(value)} given).")
    if settings.dtype not in PUBLIC_DTYPES:
        raise ValueError(f"Precision must be one of {', '.join(PUBLIC_DTYPES)} on this public app, "
                         f"not {str(settings.dtype)[:20]!r}.")
    return settings


def _brief(value: float) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return text if len(text) <= 20 else text[:17] + "..."
