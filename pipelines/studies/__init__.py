"""Case studies: each answers one designer's question from replays of real logs, and writes a Markdown
section (its finding in one sentence with numbers, the data it used), PNGs with titles and units, the table
of every point, and its headline metrics, under reports/studies/<name>/. `hermes-sim study NAME` runs one;
each is a DVC stage, and `hermes-sim report` assembles reports/README.md from them."""

from .disagg import disaggregation
from .kv_tiers import kv_retrieval
from .rag import rag_placement
from .reasoning import reasoning
from .tokens_per_dollar import tokens_per_dollar

STUDIES = {
    "reasoning": reasoning,
    "rag": rag_placement,
    "kv_tiers": kv_retrieval,
    "disagg": disaggregation,
    "tokens_per_dollar": tokens_per_dollar,
}
