"""The study simulator: phantom, kinetics, scanner and study design, written as BIDS.

``simulate_study(config, out_dir)`` writes a whole study (default: the
founding ketamine 5-HT1B / SERT macaque study) with its truth; see
``docs/simulate.md`` and the default config ``petbind/data/simulate_default.toml``.
The simulator's kinetics are implemented here, independently of
:mod:`petbind.models`, so it can test them.
"""

from petbind.simulate.config import SimConfig, default_config_text, load_config
from petbind.simulate.study import simulate_study

__all__ = ["SimConfig", "default_config_text", "load_config", "simulate_study"]
