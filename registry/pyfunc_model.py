"""The served model's definition, run by MLflow when it loads a registered model (models-from-code).

`registry.register.log_model` logs this file instead of a pickled `AffectGPTPyfunc`, so a model
folder holds no ``python_model.pkl`` and loading it unpickles nothing: a pickle swapped into the
folder is never read. The file only imports this package and hands MLflow the model to load.
"""

import mlflow.models

from registry.pyfunc import AffectGPTPyfunc

mlflow.models.set_model(AffectGPTPyfunc())
