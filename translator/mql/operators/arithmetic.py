"""MQL arithmetic operators (to be filled)."""
