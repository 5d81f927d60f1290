"""MQL objects operators (to be filled)."""
