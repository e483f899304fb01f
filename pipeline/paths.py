"""Where kefu-qa's files are: the one module that computes paths from `__file__`.

The package ships its own data (price table, report templates); the rubrics, prompts and eval sets
are data folders beside it in the checkout (an editable install), found relative to it.
"""

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
CHECKOUT_DIR = PACKAGE_DIR.parent
RUBRIC_DIR = CHECKOUT_DIR / "rubric"
PROMPTS_DIR = CHECKOUT_DIR / "prompts"
EVAL_SETS_DIR = CHECKOUT_DIR / "eval_sets"
DATA_DIR = PACKAGE_DIR / "data"
DEFAULT_RUBRIC = RUBRIC_DIR / "ecommerce_cs.yaml"
