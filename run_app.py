"""Start the dashboard warm: heavy modules imported and the default results computing before anyone connects.

    python run_app.py                                  # = streamlit run dashboard.py, warmed up
    python run_app.py --server.port 8502               # any `streamlit run` option passes through

`streamlit run dashboard.py` imports torch, pandas, plotly and the pages' modules, and loads the model,
on the first browser session, and a first visit to any evaluation page then evaluates the sample: the
first view waits for all of it. This launcher imports those modules before the server answers, then
starts Streamlit in this same process (streamlit.web.cli, the code behind `streamlit run`; the
.streamlit/config.toml of this folder applies: localhost, upload cap, no file watcher) and, in a
background thread, computes the default model's results on the default data through core: the
evaluation of data/sample/test, then of the other sample splits, then the robustness sweep. They are
stored under runs/ (keyed by weights sha256, data fingerprint and result format, as every page's are),
so the pages read them from disk; a page that asks for one while it is being computed waits for it
(core.checkpoint.result_lock) instead of computing it a second time. Any failure in the warm-up is
printed and left to the pages, which compute and report as usual.
"""
from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
WARM_UP_DONE = "warm-up: default results stored"      # benchmarks/bench_browser.py waits for this line


# Every core module a page imports (core never imports streamlit); pages_support itself is left to the
# first script run: its st.cache_data functions must be created inside the Streamlit runtime.
CORE_MODULES = ["archive", "audit_cache", "checkpoint", "compare", "datasets", "evaluate", "figures", "forensics",
                "generalize", "gradcam", "images", "labels", "limitations", "metrics", "models", "predict", "report",
                "robustness", "shifts", "slices", "stability", "verdict"]


def import_heavy_modules() -> None:
    """What a first script run would import: streamlit, torch, pandas, plotly and the core modules."""
    import importlib

    import plotly.graph_objects  # noqa: F401
    import plotly.subplots  # noqa: F401
    import streamlit  # noqa: F401
    for name in CORE_MODULES:
        importlib.import_module(f"core.{name}")


def warm_up(log=print) -> list[str]:
    """Compute and store the default results (the pages' own paths and keys); returns what was done."""
    from core.checkpoint import load_checkpoint
    from core.datasets import cifake_splits, open_dataset
    from core.evaluate import cached_evaluation
    from core.robustness import cached_sweep
    from pages_support.paths import DEFAULT_WEIGHTS, RUNS_DIR, SAMPLE_DIR

    done = []
    if not DEFAULT_WEIGHTS.is_file():
        return done
    lm = load_checkpoint(str(DEFAULT_WEIGHTS), "cpu")
    splits = sorted(cifake_splits(SAMPLE_DIR), key=lambda s: (s != "test", s != "ood", s))   # the sidebar's order
    sets = {s: open_dataset(str(SAMPLE_DIR), split=s, fmt="cifake") for s in splits}
    # Most pages need the test evaluation; Limitations also the ood one and the sweep.
    steps = [(f"evaluation of {s}", lambda ds=ds: cached_evaluation(lm, ds, RUNS_DIR)) for s, ds in sets.items()]
    if "test" in sets:
        steps.insert(1, ("robustness sweep of test", lambda: cached_sweep(lm, sets["test"], RUNS_DIR)))
    for name, step in steps:
        t0 = time.perf_counter()
        step()
        done.append(name)
        log(f"warm-up: {name} ready ({time.perf_counter() - t0:.1f} s)")
    log(WARM_UP_DONE)
    return done


def _warm_up_in_background() -> threading.Thread:
    def run():
        try:
            warm_up(log=lambda msg: print(msg, file=sys.stderr, flush=True))
        except Exception:                   # the pages compute (and report) it themselves
            print("warm-up failed; the pages will compute their results themselves:\n" + traceback.format_exc(),
                  file=sys.stderr, flush=True)
    t = threading.Thread(target=run, name="warm-up", daemon=True)
    t.start()
    return t


def main(argv: list[str] | None = None) -> None:
    os.chdir(HERE)                          # .streamlit/config.toml and the relative page paths
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    t0 = time.perf_counter()
    import_heavy_modules()
    print(f"imported the app's modules in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    _warm_up_in_background()
    from streamlit.web import cli
    sys.argv = ["streamlit", "run", str(HERE / "dashboard.py"), *(sys.argv[1:] if argv is None else argv)]
    sys.exit(cli.main())


if __name__ == "__main__":
    main()
