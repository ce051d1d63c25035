"""unikit: teach and probe personalized unified multimodal models."""
