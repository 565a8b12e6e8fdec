"""The decision step: which offers a profile sees in which placements (eligibility, caps, fallbacks,
no duplicates), for one request, a batch, or over HTTP, and the decision log. Takes published
tables, profiles and the catalog; gives decisions and logged displays.
"""
