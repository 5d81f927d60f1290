"""The MongoDB query engine for `$match`, `$validate` and `$expr` (to be filled)."""
