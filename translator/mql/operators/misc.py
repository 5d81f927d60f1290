"""MQL misc operators (to be filled)."""
