"""Rubrics as data: the model, its hooks (caps, critical items), loading."""
