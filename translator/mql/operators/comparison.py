"""MQL comparison operators (to be filled)."""
