"""Where kefu-qa's files are: the one module that computes paths from `__file__`.

The package ships its own data (price table, report templates); the rubrics, prompts and eval sets
are data folders beside it in the checkout (an editable install), found relative to it.
"""

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
CHECKOUT_DIR = PACKAGE_DIR.parent
RUBRIC_DIR = CHECKOUT_DIR / "rubric"
PROMPTS_DIR = CHECKOUT_DIR / "prompts"
EVAL_SETS_DIR = CHECKOUT_DIR / "eval_sets"
DATA_DIR = PACKAGE_DIR / "data"
DEFAULT_RUBRIC = RUBRIC_DIR / "ecommerce_cs.yaml"


def _shared_dir() -> Path:
    """$KEFU_SHARED_DIR, else the `shared` folder beside the checkout or one of its parents (a worktree)."""
    if os.environ.get("KEFU_SHARED_DIR"):
        return Path(os.environ["KEFU_SHARED_DIR"])
    for parent in CHECKOUT_DIR.parents:
        if (parent / "shared").is_dir():
            return parent / "shared"
    return CHECKOUT_DIR.parent / "shared"


SHARED_DIR = _shared_dir()
"""The team's shared material (seed documents, evaluation data sets): never part of the repository."""
DCH1_DIR = Path(os.environ.get("KEFU_DCH1") or SHARED_DIR / "datasets" / "dch1_stc3")
"""The DCH-1 human-labelled dialogues (internal evaluation only); tests that need them skip when absent."""
SEEDS_DIR = SHARED_DIR / "seeds"
"""The documents the rubric and the service standards come from."""
