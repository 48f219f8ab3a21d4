"""Where the app finds its checkpoints, the sample and its stored results (AUDIT_* environment overrides).

No streamlit here: run_app.py's warm-up reads these before the Streamlit runtime exists (importing
pages_support.common then would bind its st.cache_data functions to a storage outside the runtime).
"""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Overridable so tests (and users with their own model zoo) can point the app elsewhere.
WEIGHTS_DIR = Path(os.environ.get("AUDIT_WEIGHTS_DIR", ROOT / "weights"))
SAMPLE_DIR = Path(os.environ.get("AUDIT_SAMPLE_DIR", ROOT / "data" / "sample"))
RUNS_DIR = Path(os.environ.get("AUDIT_RUNS_DIR", ROOT / "runs"))
DEFAULT_WEIGHTS = WEIGHTS_DIR / "default.pt"


def shipped_weights(weights_dir=None) -> list[Path]:
    """The checkpoints in weights_dir (default WEIGHTS_DIR), default.pt first: the sidebar's list; Compare's
    model B is the first of them other than model A."""
    return sorted(Path(weights_dir or WEIGHTS_DIR).glob("*.pt"), key=lambda p: (p.name != "default.pt", p.name))
