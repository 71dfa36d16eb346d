"""The paper's ResNet classifier, its training, and its life in the MLflow registry."""
