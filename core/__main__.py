"""The command line of the library: one dispatcher over the tools, each a module with its own `main(argv)`.

    python -m core                       # the table of tools
    python -m core TOOL --help           # one tool's options
    python -m core evaluate --weights weights/default.pt --data data/sample/test --out runs/eval
    torchrun --nproc-per-node 2 -m core train --data data/sample --out weights/ddp.pt

The table reads each tool's one-line summary from its module docstring without importing it, so listing the tools
does not import torch.
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
import sys

# tool name -> the module whose main(argv) it runs
TOOLS = {
    "train": "core.model.train",
    "ensemble": "core.model.ensemble",
    "evaluate": "core.inference.evaluate",
    "predict": "core.inference.predict",
    "recalibrate": "core.verdict.recalibrate",
    "generalize": "core.audits.generalize",
    "new-content": "core.audits.new_content",
    "robustness": "core.audits.robustness",
    "stability": "core.audits.stability",
    "compare": "core.audits.compare",
    "slices": "core.audits.slices",
    "forensics": "core.audits.forensics",
    "limitations": "core.audits.limitations",
    "embedding": "core.audits.embedding",
    "data-issues": "core.audits.data_issues",
    "report": "core.report.report",
    "cards": "core.report.cards",
}


def summary(module: str) -> str:
    """The first line of `module`'s docstring, read from its source (the module is not imported)."""
    spec = importlib.util.find_spec(module)
    with open(spec.origin, encoding="utf-8") as f:
        doc = ast.get_docstring(ast.parse(f.read())) or ""
    return doc.splitlines()[0] if doc else ""


def usage() -> str:
    width = max(map(len, TOOLS))
    rows = [f"  {name:<{width}}  {summary(module)}" for name, module in TOOLS.items()]
    return "\n".join(["usage: python -m core TOOL [ARGS...]   (python -m core TOOL --help for its options)",
                      "", "tools:", *rows])


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in TOOLS:
        print(f"error: unknown tool {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    sys.argv = [f"python -m core {name}", *rest]      # argparse's usage line names the tool
    return importlib.import_module(TOOLS[name]).main(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
