"""Customer AI: propensity goals, point-in-time examples, LightGBM propensity models, their
explanations and score segments. Takes validated events and profiles; gives fitted models and
per-profile scores, percentiles and buckets.
"""
