"""Evaluation core (numpy only): part-wise distances, the four gait protocols, the GEI baseline and a
runner that embeds a labelled test set with any `embed(batch) -> (N, P, C)` function."""
