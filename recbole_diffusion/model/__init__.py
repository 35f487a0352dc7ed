"""Models of recbole-diffusion (``sequential_recommender``) and the whole-sequence training
adapters of RecBole's built-ins (``sequence_adapters``)."""
