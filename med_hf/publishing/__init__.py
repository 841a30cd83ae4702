"""Publishing to the Hugging Face Hub: `med-publish` (the model repo with remote code and a model card, and the
demo Space) and the model card shared with training and the shipped default model."""
