"""tanji package."""
