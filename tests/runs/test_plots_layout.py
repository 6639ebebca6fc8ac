"""Plots lay themselves out (constrained layout): no matplotlib layout warnings."""

from __future__ import annotations

import warnings

from byzance.runs.plots import plot_curves


def test_curves_with_long_labels_emit_no_warning(tmp_path):
    curves = {
        f"bucketing(s=2)>centered_clipping(tau={tau}) vs gaussian(sigma=1e6)": [(0, 0.1), (10, 0.5)]
        for tau in (1.0, 10.0, 100.0)
    }
    path = tmp_path / "curves.png"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plot_curves(curves, path, title="a long title " * 6)
    assert path.stat().st_size > 0
