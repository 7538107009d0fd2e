"""Complementary-label learning benchmark: strategies, models, the trainer, VLPL baselines and the run grid."""
