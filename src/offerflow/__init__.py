"""offerflow: learn from offer displays and conversions, rank offers per profile, decide."""

__version__ = "0.1.0"
