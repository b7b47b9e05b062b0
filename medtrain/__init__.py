"""medtrain: further pretraining of multilingual BERT on medical text, and the studies around it."""

__version__ = "0.1.0"
