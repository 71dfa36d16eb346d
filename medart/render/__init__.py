"""Tables, figures and generated text from results: pure functions, no MLflow, no run logic.

Figures are :class:`matplotlib.figure.Figure` objects made without pyplot, so no module switches
matplotlib's backend and none keeps a figure alive after it is saved.
"""
