"""Which ranking strategy helps: off-policy estimates (IPS, SNIPS, DR, slates), holdout lift, and
the evaluation report. Takes logged displays with propensities; gives estimates with intervals,
charts and serving recommendations.
"""
