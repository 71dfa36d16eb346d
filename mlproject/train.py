"""`mlflow run . -e train`: see MLproject for the parameters and medart/project.py for their checks."""

import sys

from medart.project import run

if __name__ == "__main__":
    sys.exit(run("train", sys.argv[1:]))
