"""Offer ranking: eligibility, priority and formulas, Thompson-sampling auto-optimization, the
personalized click model, and the published ranking tables. Takes events, profiles, offers and a
placement's method; gives score matrices and versioned top-k tables.
"""
