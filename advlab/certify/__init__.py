"""Certified robustness: the lower bound that brackets an attack's upper bound.

- randomized smoothing (Cohen et al. 2019): `certify_smoothing`, `predict_smoothing` (L2, any model);
- interval bound propagation (Gowal et al. 2018): `certify_ibp`, `interval_bounds` (Linf, the zoo's
  MLPs, CNNs and ResNets);
- CROWN and alpha-CROWN (Zhang et al. 2018, Xu et al. 2021): `certify_crown`, `crown_bounds`,
  `crown_margin_bounds` (Linf and L2, tighter than IBP);
- complete verification: `verify_exact` decides each point (verified, falsified with a counterexample,
  or unknown at the timeout) with an attack, alpha-CROWN and a MILP (HiGHS);
- `bracket` adds certified accuracy beside an evaluation's robust accuracy
  (`advlab evaluate --certify`). Running one on a model and its data and recording it in the run
  directory (RUN/certify/NAME/result.json, what `advlab certify` does) is advlab.artifacts.certify_run.

docs/certify.md has the details and caveats.
"""

from .crown import certify_crown, check_crown_supported, crown_bounds, crown_margin_bounds
from .exact import verify_exact
from .ibp import Box, check_ibp_supported, certify_ibp, compile_ops, input_box, interval_bounds, margin_lower_bounds
from .result import ABSTAIN, DEFAULT_RADII, Certificate
from .smoothing import certify_smoothing, lower_confidence_bound, predict_smoothing, radius_from_p

__all__ = ["ABSTAIN", "Box", "Certificate", "DEFAULT_RADII", "certify_crown", "certify_ibp", "certify_smoothing",
           "check_crown_supported", "check_ibp_supported", "compile_ops", "crown_bounds", "crown_margin_bounds",
           "input_box", "interval_bounds", "lower_confidence_bound", "margin_lower_bounds", "predict_smoothing",
           "radius_from_p", "verify_exact"]
