"""`mlflow run . -e ablate`: see MLproject for the parameters and medart/project.py for their checks."""

import sys

from medart.project import run

if __name__ == "__main__":
    sys.exit(run("ablate", sys.argv[1:]))
