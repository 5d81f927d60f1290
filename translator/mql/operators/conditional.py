"""MQL conditional operators (to be filled)."""
