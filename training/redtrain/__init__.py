"""redtrain: train, export and evaluate Random Ensemble Defense model packages."""

__version__ = "0.1.0"
