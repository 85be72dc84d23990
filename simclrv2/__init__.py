"""SimCLR v2 for Keras 3: model zoo, training recipes and exports.

Chen, Kornblith, Swersky, Norouzi, Hinton. "Big Self-Supervised Models are Strong
Semi-Supervised Learners", NeurIPS 2020 (arXiv:2006.10029).
"""

__version__ = "0.1.0"
