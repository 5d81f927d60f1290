"""mqlflow package."""
