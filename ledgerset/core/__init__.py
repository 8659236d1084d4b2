"""What a model and a set are: the model class, the set type, the member codec, keys and config."""
