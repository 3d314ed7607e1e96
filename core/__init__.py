"""The base layer: errors, run configuration, Ray start-up, MLflow tracking URI, console. Imports nothing of ours."""
