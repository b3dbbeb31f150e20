"""Sliders and pickers that behave the same in every lesson.

A static figure at the default values is always drawn first (papermill, nbval and GitHub show it);
the widget only re-draws it.  Without ipywidgets or with ``interactive=False``, nothing else happens.
"""
from __future__ import annotations


def interact(update, interactive: bool = True, continuous: bool = False, **controls):
    """Call ``update(**defaults)`` once (the static output), then wire ``controls`` to it.

    ``controls``: name -> an ipywidgets widget.  Sliders redraw when released (``continuous_update=False``,
    every redraw here is a matplotlib figure of ~50-100 ms) unless ``continuous``.  Returns the widget
    box, or ``None`` when headless.
    """
    defaults = {k: w.value for k, w in controls.items()}
    if not interactive:
        update(**defaults)
        return None
    try:
        import ipywidgets as w
        from IPython.display import display
    except ImportError:
        update(**defaults)
        return None
    out = w.Output()
    readout = w.HTML()

    def redraw(_=None):
        values = {k: c.value for k, c in controls.items()}
        readout.value = " · ".join(f"<b>{k}</b> = {v if not isinstance(v, float) else f'{v:.3g}'}"
                                   for k, v in values.items() if not isinstance(v, (tuple, list)))
        with out:
            out.clear_output(wait=True)
            update(**values)

    for c in controls.values():
        if hasattr(c, "continuous_update"):
            c.continuous_update = continuous
        c.observe(redraw, names="value")
    box = w.VBox([w.HBox(list(controls.values())), readout, out])
    display(box)
    redraw()
    return box
