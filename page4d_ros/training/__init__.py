"""Training and fine-tuning of PAGE-4D models."""
