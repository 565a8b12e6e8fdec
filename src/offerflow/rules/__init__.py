"""Decision rules: the expression language of eligibility rules and ranking formulas, and
frequency caps. Takes expression text and cap settings; gives compiled, type-checked rules that
evaluate per row or per batch.
"""
