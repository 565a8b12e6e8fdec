"""Seeded synthetic worlds whose true probabilities are known, and simulators of logging policies.
Takes a spec and a seed; gives profiles, offers, events and the truth. For demos, tests and
benchmarks only.
"""
